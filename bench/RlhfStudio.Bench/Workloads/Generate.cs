using RlhfStudio.Engine.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Sampling generation (temperature 1, no top-k/top-p, as TRL's PPO rollouts) of 128 new tokens for a batch of
/// 8 prompts of 32 tokens with the KV cache; EOS is disabled so every row generates all tokens.</summary>
public sealed class Generate : IWorkload
{
    public const int Batch = 8, PromptLength = 32, NewTokens = 128;
    public string Name => $"generate {Batch}x({PromptLength}+{NewTokens})";

    public IEnumerable<Measurement> Run(BenchContext context)
    {
        var settings = new GenerationSettings { MaxNewTokens = NewTokens, Temperature = 1.0, EosTokenIds = [], PadTokenId = 0, Seed = 3 };
        foreach (var dtype in BenchContext.DTypes)
        {
            using var model = BenchContext.CreateModel(dtype);
            using var ids = torch.randint(0, BenchContext.Vocab, [Batch, PromptLength], generator: new torch.Generator(9), dtype: ScalarType.Int64);
            var seconds = Timing.Seconds(() =>
            {
                using var result = TextGenerator.Generate(model, ids, null, settings);
            }, warmups: 1, repetitions: Math.Max(2, context.Repetitions - 2));
            long tokens = Batch * NewTokens;
            // Per generated token: one decode step (last position only through the LM head) at the mean context; the
            // prompt's prefill is counted too since it is part of the measured time.
            long nonEmbedding = model.CountParameters().NonEmbedding;
            double flops = ModelFlops.Forward(model.Config, nonEmbedding, tokens, averageContext: PromptLength + NewTokens / 2.0)
                           + ModelFlops.Forward(model.Config, nonEmbedding, Batch * PromptLength, PromptLength, lmHead: false);
            string name = BenchContext.Name(dtype);
            yield return Timing.Rate(Name, name, "tokens/s", tokens, seconds, flops,
                notes: $"{seconds.Min() * 1000 / NewTokens:F1} ms/step");
        }
    }
}
