using RlhfStudio.Engine.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Sampling generation (temperature 1, no top-k/top-p, as TRL's PPO rollouts) of 128 new tokens for a batch of
/// 8 prompts of 32 tokens with the KV cache; EOS is disabled so every row generates all tokens. Inference runs on fp32
/// weights with the given compute dtype, as a PPO rollout on the policy being trained does.</summary>
public static class Generate
{
    public const int Batch = 8, PromptLength = 32, NewTokens = 128;

    public static Measurement Run(string id, BenchConfig config, ScalarType dtype, int repetitions)
    {
        var settings = new GenerationSettings { MaxNewTokens = NewTokens, Temperature = 1.0, EosTokenIds = [], PadTokenId = 0, Seed = 3 };
        using var model = config.CreateModel(dtype);
        using var ids = torch.randint(0, BenchConfig.Vocab, [Batch, PromptLength], generator: new torch.Generator(9), dtype: ScalarType.Int64);
        var run = Timing.Run(() =>
        {
            using var result = TextGenerator.Generate(model, ids, null, settings);
        }, warmups: 1, repetitions);
        long tokens = Batch * NewTokens;
        // Per generated token: one decode step at the mean context; the prompt's prefill is counted too since it is
        // part of the measured time.
        long nonEmbedding = model.CountParameters().NonEmbedding;
        double flops = ModelFlops.Forward(model.Config, nonEmbedding, tokens, averageContext: PromptLength + NewTokens / 2.0)
                       + ModelFlops.Forward(model.Config, nonEmbedding, Batch * PromptLength, PromptLength, lmHead: false);
        return Timing.Rate(id, "tokens/s", tokens, run, flops,
            notes: $"{Batch}x({PromptLength}+{NewTokens}), {run.Seconds.Min() * 1000 / NewTokens:F1} ms/step");
    }
}
