using RlhfStudio.Engine.Models;
using static TorchSharp.torch;

namespace RlhfStudio.Bench;

/// <summary>A model size of the suite with its training batch. "25M" is the "small" preset (hidden 512, 8 layers, 8
/// heads, intermediate 1376, about 25M non-embedding parameters); both use an 8192-token vocabulary and tied
/// embeddings. bench/pytorch/bench.py builds the same shapes.</summary>
public sealed record BenchConfig(string Name, string Preset, int Batch, int SequenceLength)
{
    public const int Vocab = 8192;

    public static readonly BenchConfig Tiny = new("tiny", "tiny", Batch: 8, SequenceLength: 256);
    public static readonly BenchConfig Small = new("25M", "small", Batch: 4, SequenceLength: 256);
    public static IReadOnlyList<BenchConfig> All { get; } = [Tiny, Small];

    public static BenchConfig Find(string name) =>
        All.FirstOrDefault(c => c.Name == name) ?? throw new ArgumentException($"unknown bench config \"{name}\" ({string.Join(", ", All.Select(c => c.Name))})");

    public ModelConfig ModelConfig => ModelPresets.Config(Preset, Vocab);

    /// <summary>fp32 master weights (seed 1), with <paramref name="dtype"/> as the compute dtype when it is bf16: our
    /// equivalent of torch.autocast.</summary>
    public CausalLanguageModel CreateModel(ScalarType dtype)
    {
        var model = ModelPresets.Create(Preset, Vocab, seed: 1);
        if (dtype != ScalarType.Float32) model.ComputeDType = dtype;
        return model;
    }
}

public static class DTypes
{
    public static ScalarType Parse(string name) => name switch
    {
        "fp32" => ScalarType.Float32,
        "bf16" => ScalarType.BFloat16,
        _ => throw new ArgumentException($"unknown dtype \"{name}\" (fp32, bf16)"),
    };

    public static string Name(ScalarType dtype) => dtype == ScalarType.BFloat16 ? "bf16" : "fp32";
}
