using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.IO;

/// <summary>What a model folder holds, read from config.json, the safetensors headers and the tokenizer
/// files, without loading any weights (so registering a 7B model takes milliseconds).</summary>
public sealed record ModelSummary(
    string Folder,
    string ModelType,
    string Architecture,
    int HiddenSize,
    int Layers,
    int Heads,
    int KvHeads,
    int IntermediateSize,
    int VocabSize,
    int MaxPositions,
    bool TiedEmbeddings,
    long Parameters,
    long EmbeddingParameters,
    IReadOnlyList<string> StoredDTypes,
    long WeightBytes,
    bool IsAdapter,
    string? Tokenizer,
    string? TokenizerProblem,
    string? BosToken,
    string? EosToken,
    string? PadToken,
    bool PadIsEos,
    string DefaultTemplate);

public static class ModelInspection
{
    /// <summary>Summarises a Hugging Face model folder. Throws <see cref="ModelLoadException"/> naming the file
    /// when config.json or the weights are missing or malformed; a tokenizer problem is reported, not thrown.</summary>
    public static ModelSummary Inspect(string folder)
    {
        if (!Directory.Exists(folder)) throw new ModelLoadException($"{folder}: no such folder");
        var config = ModelLoader.ReadConfig(folder);
        long parameters = 0, embedding = 0, bytes = 0;
        var dtypes = new SortedSet<string>(StringComparer.Ordinal);
        using (var files = CheckpointFiles.Open(folder))
        {
            foreach (var name in files.Tensors.Keys)
            {
                var info = files.Info(name);
                long count = info.Shape.Aggregate(1L, (a, b) => checked(a * b));
                parameters += count;
                bytes += info.ByteLength;
                dtypes.Add(info.DTypeName);
                if (name.EndsWith("embed_tokens.weight", StringComparison.Ordinal) || name.EndsWith("wte.weight", StringComparison.Ordinal)
                    || name.EndsWith("wpe.weight", StringComparison.Ordinal))
                    embedding += count;
            }
        }

        TextTokenizer? tokenizer = null;
        string? problem = null;
        try { tokenizer = TextTokenizer.Load(folder); }
        catch (TokenizerLoadException e) { problem = e.Message; }

        return new ModelSummary(
            Folder: Path.GetFullPath(folder),
            ModelType: config.ModelType,
            Architecture: config.Architectures.FirstOrDefault() ?? config.ArchitectureFor(config.Head),
            HiddenSize: config.HiddenSize,
            Layers: config.NumHiddenLayers,
            Heads: config.NumAttentionHeads,
            KvHeads: config.NumKeyValueHeads,
            IntermediateSize: config.IntermediateSize,
            VocabSize: config.VocabSize,
            MaxPositions: config.MaxPositionEmbeddings,
            TiedEmbeddings: config.TieWordEmbeddings,
            Parameters: parameters,
            EmbeddingParameters: embedding,
            StoredDTypes: [.. dtypes],
            WeightBytes: bytes,
            IsAdapter: File.Exists(Path.Combine(folder, "adapter_config.json")),
            Tokenizer: tokenizer is null ? null : $"{tokenizer.Kind} ({tokenizer.VocabSize:N0} tokens)",
            TokenizerProblem: problem,
            BosToken: tokenizer?.BosToken,
            EosToken: tokenizer?.EosToken,
            PadToken: tokenizer?.PadToken,
            PadIsEos: tokenizer?.PadIsEos ?? false,
            DefaultTemplate: tokenizer is null ? PromptTemplates.StackLlama.Name : PromptTemplates.DefaultFor(tokenizer, config.ModelType).Name);
    }
}
