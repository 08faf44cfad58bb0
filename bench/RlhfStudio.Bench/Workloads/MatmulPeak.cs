using RlhfStudio.Engine.Runtime;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Square torch.mm throughput: the peak that model FLOP utilisation is measured against.</summary>
public sealed class MatmulPeak : IWorkload
{
    public const int Size = 1024;
    public string Name => $"matmul {Size}x{Size}";

    public IEnumerable<Measurement> Run(BenchContext context)
    {
        foreach (var dtype in BenchContext.DTypes)
        {
            var r = MatmulBenchmark.Measure(dtype, Size, repetitions: context.Quick ? 3 : 5, callsPerRound: 4);
            context.PeakGflops[r.DType] = r.BestGflops;
            double callMs = 2.0 * Size * Size * Size / (r.BestGflops * 1e9) * 1000;
            yield return new Measurement(Name, r.DType, "GFLOP/s", r.BestGflops, r.MedianGflops, r.Repetitions, callMs);
        }
    }
}
