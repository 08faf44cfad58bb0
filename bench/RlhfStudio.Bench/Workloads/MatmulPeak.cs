using RlhfStudio.Engine.Runtime;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Square torch.mm throughput: the peak that model FLOP utilisation is measured against. It runs first and
/// again last; utilisation uses the best of both, so a burst of load from other processes during one of them does
/// not inflate the figures.</summary>
public sealed class MatmulPeak(string when) : IWorkload
{
    public const int Size = 1024;
    public string Name => $"matmul {Size}x{Size} ({when})";

    public IEnumerable<Measurement> Run(BenchContext context)
    {
        foreach (var dtype in BenchContext.DTypes)
        {
            var r = MatmulBenchmark.Measure(dtype, Size, repetitions: context.Quick ? 3 : 5, callsPerRound: 4);
            double callMs = 2.0 * Size * Size * Size / (r.BestGflops * 1e9) * 1000;
            yield return new Measurement(Name, r.DType, "GFLOP/s", r.BestGflops, r.MedianGflops, r.Repetitions, callMs);
        }
    }
}
