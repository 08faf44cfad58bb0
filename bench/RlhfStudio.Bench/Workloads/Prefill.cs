using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>No-grad forward of a full batch (8 x 256 tokens) to logits at every position, as scoring a batch in
/// PPO or evaluation does.</summary>
public sealed class Prefill : IWorkload
{
    public const int Batch = 8, Length = 256;
    public string Name => $"forward {Batch}x{Length}";

    public IEnumerable<Measurement> Run(BenchContext context)
    {
        foreach (var dtype in BenchContext.DTypes)
        {
            using var model = BenchContext.CreateModel(dtype);
            using var ids = torch.randint(0, BenchContext.Vocab, [Batch, Length], generator: new torch.Generator(7), dtype: ScalarType.Int64);
            var seconds = Timing.Seconds(() =>
            {
                using var noGrad = torch.no_grad();
                using var scope = NewDisposeScope();
                model.Forward(ids);
            }, warmups: 1, repetitions: context.Repetitions);
            long tokens = Batch * Length;
            // Causal attention over a prefix of length t averages (T + 1) / 2 keys; SDPA still computes the full T x T.
            double flops = ModelFlops.Forward(model.Config, model.CountParameters().NonEmbedding, tokens, averageContext: Length);
            string name = BenchContext.Name(dtype);
            yield return Timing.Rate(Name, name, "tokens/s", tokens, seconds, flops);
        }
    }
}
