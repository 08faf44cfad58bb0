using System.Text.Json.Serialization;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using TorchSharp;

namespace RlhfStudio.Engine.IO;

/// <summary>What a model folder holds, read from config.json, the safetensors headers and the tokenizer files
/// without loading any weight: parameter counts come from the model built on the meta device, which allocates
/// nothing, so inspecting a 7B model takes milliseconds. The CLI's <c>model inspect</c> and the studio's
/// Models page both show this.</summary>
public sealed record ModelInspection(
    string Folder,
    [property: JsonIgnore] ModelConfig Config,
    ParameterCounts Parameters,
    IReadOnlyDictionary<string, long> StoredDTypes,
    IReadOnlyList<string> WeightFiles,
    long WeightBytes,
    bool IsAdapter,
    [property: JsonIgnore] TextTokenizer? Tokenizer,
    string? TokenizerError,
    string DefaultTemplate)
{
    public string Architecture => Config.Architectures.Count > 0 ? Config.Architectures[0] : Config.ArchitectureFor(Config.Head);
    public string ModelType => Config.ModelType;
    public int HiddenSize => Config.HiddenSize;
    public int Layers => Config.NumHiddenLayers;
    public int Heads => Config.NumAttentionHeads;
    public int KvHeads => Config.NumKeyValueHeads;
    public int IntermediateSize => Config.IntermediateSize;
    public int VocabSize => Config.VocabSize;
    public int MaxPositions => Config.MaxPositionEmbeddings;
    public bool TiedEmbeddings => Config.TieWordEmbeddings;
    /// <summary>"ByteLevelBpe (49,152 tokens)", or null when the tokenizer cannot be loaded.</summary>
    public string? TokenizerSummary => Tokenizer is null ? null : $"{Tokenizer.Kind} ({Tokenizer.VocabSize:N0} tokens)";
    public string? BosToken => Tokenizer?.BosToken;
    public string? EosToken => Tokenizer?.EosToken;
    public string? PadToken => Tokenizer?.PadToken;
    public bool PadIsEos => Tokenizer?.PadIsEos ?? false;

    /// <summary>Inspects a Hugging Face model folder. Throws <see cref="ModelLoadException"/> naming the file when
    /// config.json or the weights are missing or malformed (pickle files refused); a tokenizer problem is reported
    /// in <see cref="TokenizerError"/>, not thrown.</summary>
    public static ModelInspection Inspect(string folder)
    {
        if (!Directory.Exists(folder)) throw new ModelLoadException($"{folder}: no such folder");
        var config = ModelLoader.ReadConfig(folder);
        ParameterCounts counts;
        using (TransformerModel model = config.Head == ModelHead.SequenceClassification
                   ? new ScoreModel(config, device: torch.META) : new CausalLanguageModel(config, device: torch.META))
            counts = model.CountParameters();
        Dictionary<string, long> dtypes;
        List<string> files;
        long bytes;
        using (var checkpoint = CheckpointFiles.Open(folder))
        {
            dtypes = checkpoint.Tensors.Keys.GroupBy(name => checkpoint.Info(name).DTypeName)
                .OrderBy(g => g.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => (long)g.Count());
            files = checkpoint.Tensors.Values.Select(f => Path.GetFileName(f.Path)).Distinct().Order(StringComparer.Ordinal).ToList();
            bytes = checkpoint.Tensors.Keys.Sum(name => checkpoint.Info(name).ByteLength);
        }
        TextTokenizer? tokenizer = null;
        string? tokenizerError = null;
        try { tokenizer = TextTokenizer.Load(folder); }
        catch (TokenizerLoadException e) { tokenizerError = e.Message; }
        var template = tokenizer is null ? PromptTemplates.StackLlama : PromptTemplates.DefaultFor(tokenizer, config.ModelType);
        return new ModelInspection(Path.GetFullPath(folder), config, counts, dtypes, files, bytes,
            File.Exists(Path.Combine(folder, "adapter_config.json")), tokenizer, tokenizerError, template.Name);
    }
}
