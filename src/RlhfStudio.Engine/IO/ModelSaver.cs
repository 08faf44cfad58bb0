using RlhfStudio.Engine.Models;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.IO;

/// <summary>Saves a model as a Hugging Face folder: config.json, model.safetensors (or shards + index) and the
/// tokenizer files copied from the folder the model came from.</summary>
public static class ModelSaver
{
    public static readonly IReadOnlyList<string> TokenizerFiles =
    [
        "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.json", "merges.txt", "generation_config.json",
    ];

    /// <summary>Writes <paramref name="model"/> into <paramref name="folder"/> with weights in <paramref name="dtype"/>
    /// (default: the model's). <paramref name="config"/> defaults to the model's; architectures and torch_dtype are set
    /// for what is saved.</summary>
    /// <returns>The files written.</returns>
    public static IReadOnlyList<string> Save(TransformerModel model, string folder, ScalarType? dtype = null,
        string? copyTokenizerFilesFrom = null, ModelConfig? config = null, long maxShardBytes = SafeTensorsWriter.DefaultMaxShardBytes)
    {
        if (model.HasUnmergedAdapters)
            throw new InvalidOperationException("the model has LoRA adapters that are not merged into its weights: save them with Lora.Save, or use Lora.SaveMerged for a plain model folder");
        var stored = dtype ?? model.DType;
        Directory.CreateDirectory(folder);
        var written = new List<string>(SafeTensorsWriter.WriteFolder(folder, model.HfWeights(), stored, maxShardBytes));
        var configPath = Path.Combine(folder, ModelLoader.ConfigFileName);
        (config ?? model.Config).Save(configPath, model.Head, stored);
        written.Add(configPath);
        if (copyTokenizerFilesFrom is not null && Path.GetFullPath(copyTokenizerFilesFrom) != Path.GetFullPath(folder))
        {
            foreach (var name in TokenizerFiles)
            {
                var source = Path.Combine(copyTokenizerFilesFrom, name);
                if (!File.Exists(source)) continue;
                var target = Path.Combine(folder, name);
                File.Copy(source, target, overwrite: true);
                written.Add(target);
            }
        }
        return written;
    }
}
