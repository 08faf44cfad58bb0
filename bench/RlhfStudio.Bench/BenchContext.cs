using RlhfStudio.Engine.Models;
using static TorchSharp.torch;

namespace RlhfStudio.Bench;

/// <summary>What workloads share: options, the measured matmul peaks (for utilisation) and the model under test.</summary>
public sealed class BenchContext(bool quick)
{
    public bool Quick { get; } = quick;
    public int Repetitions => Quick ? 2 : 5;

    /// <summary>The "small" preset (hidden 512, 8 layers, 8 heads, intermediate 1376) with an 8192-token vocabulary.</summary>
    public const string Preset = "small";
    public const int Vocab = 8192;

    public static CausalLanguageModel CreateModel(ScalarType dtype) => ModelPresets.Create(Preset, Vocab, seed: 1, dtype: dtype);

    public static string Name(ScalarType dtype) => dtype == ScalarType.BFloat16 ? "bf16" : "fp32";

    public static IEnumerable<ScalarType> DTypes => [ScalarType.Float32, ScalarType.BFloat16];
}

/// <summary>A benchmark workload. Add new ones (training steps, PPO, DPO, a PyTorch comparison) to the list in Program.cs.</summary>
public interface IWorkload
{
    string Name { get; }
    IEnumerable<Measurement> Run(BenchContext context);
}
