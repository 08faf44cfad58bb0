using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

/// <summary>Built-in Llama-architecture models trained from scratch, sized for a CPU. The vocabulary comes from
/// the tokenizer the caller picked; embeddings are tied to keep small models small.</summary>
public static class ModelPresets
{
    private sealed record Shape(int Hidden, int Layers, int Heads, int KvHeads, int Intermediate, int MaxPositions);

    private static readonly Dictionary<string, Shape> Shapes = new(StringComparer.Ordinal)
    {
        // ~3.2M non-embedding parameters.
        ["tiny"] = new(Hidden: 256, Layers: 4, Heads: 4, KvHeads: 4, Intermediate: 688, MaxPositions: 2048),
        // ~25M non-embedding parameters.
        ["small"] = new(Hidden: 512, Layers: 8, Heads: 8, KvHeads: 8, Intermediate: 1376, MaxPositions: 2048),
    };

    public static IReadOnlyList<string> Names { get; } = [.. Shapes.Keys];

    /// <summary>The config of preset <paramref name="name"/> for a tokenizer with <paramref name="vocabSize"/> tokens.</summary>
    public static ModelConfig Config(string name, int vocabSize, long? bosTokenId = null, IReadOnlyList<long>? eosTokenIds = null, long? padTokenId = null)
    {
        if (!Shapes.TryGetValue(name, out var s))
            throw new ArgumentException($"unknown model preset \"{name}\" (presets: {string.Join(", ", Names)})", nameof(name));
        if (vocabSize <= 0) throw new ArgumentOutOfRangeException(nameof(vocabSize), "must be positive");
        return new ModelConfig
        {
            ModelType = "llama",
            Architectures = ["LlamaForCausalLM"],
            VocabSize = vocabSize,
            HiddenSize = s.Hidden,
            IntermediateSize = s.Intermediate,
            NumHiddenLayers = s.Layers,
            NumAttentionHeads = s.Heads,
            NumKeyValueHeads = s.KvHeads,
            HeadDim = s.Hidden / s.Heads,
            MaxPositionEmbeddings = s.MaxPositions,
            NormEps = 1e-5,
            RopeTheta = 10000,
            TieWordEmbeddings = true,
            HiddenAct = "silu",
            InitializerRange = 0.02,
            BosTokenId = bosTokenId,
            EosTokenIds = eosTokenIds ?? [],
            PadTokenId = padTokenId,
            Source = $"preset \"{name}\"",
        };
    }

    /// <summary>A freshly initialised causal LM of preset <paramref name="name"/> (same seed, same weights).</summary>
    public static CausalLanguageModel Create(string name, int vocabSize, long seed = 0, ScalarType dtype = ScalarType.Float32,
        Device? device = null, long? bosTokenId = null, IReadOnlyList<long>? eosTokenIds = null, long? padTokenId = null)
    {
        var model = new CausalLanguageModel(Config(name, vocabSize, bosTokenId, eosTokenIds, padTokenId), dtype, device);
        try
        {
            model.InitializeWeights(seed);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
