using RlhfStudio.Engine.Runtime;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Square torch.mm throughput at n = 2048 (the size at which both libraries peak here): the machine limit that
/// model FLOP utilisation is measured against.</summary>
public static class MatmulPeak
{
    public const int Size = 2048;

    public static Measurement Run(string id, ScalarType dtype, int repetitions)
    {
        var r = MatmulBenchmark.Measure(dtype, Size, repetitions: repetitions, callsPerRound: 4);
        double callMs = 2.0 * Size * Size * Size / (r.BestGflops * 1e9) * 1000;
        return new Measurement(id, "GFLOP/s", r.BestGflops, r.MedianGflops, r.Repetitions, callMs, Notes: $"{Size}^3 torch.mm");
    }
}
