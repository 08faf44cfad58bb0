using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Bench.Workloads;

/// <summary>A reward-model step as TRL's RewardTrainer: a ScoreModel (one label) scores chosen and rejected sequences
/// (8 pairs of 256 tokens, in one forward of 16 rows), pairwise loss -logsigmoid(r_chosen - r_rejected), backward,
/// AdamW. Written directly with the engine's modules (the reward trainer is another branch's work).</summary>
public static class RewardStep
{
    public const int Pairs = 8, Length = 256;

    public static Measurement Run(string id, BenchConfig config, ScalarType dtype, int repetitions)
    {
        using var model = new ScoreModel(config.ModelConfig with { NumLabels = 1 });
        model.InitializeWeights(1);
        if (dtype != ScalarType.Float32) model.ComputeDType = dtype;
        using var optimizer = new AdamWOptimizer(ParameterGroups.Trainable(model), weightDecay: 0.1);
        var gen = new torch.Generator(13);
        using var ids = torch.randint(0, BenchConfig.Vocab, [2 * Pairs, Length], generator: gen, dtype: ScalarType.Int64);   // chosen rows, then rejected
        double lastLoss = 0;
        var run = Timing.Run(() =>
        {
            using var scope = NewDisposeScope();
            var scores = model.Forward(ids);                                                  // (2P, T, 1)
            var rewards = ScoreModel.Pool(scores, ids, padTokenId: null).squeeze(-1).to(ScalarType.Float32);   // (2P)
            var loss = -F.logsigmoid(rewards.narrow(0, 0, Pairs) - rewards.narrow(0, Pairs, Pairs)).mean();
            loss.backward();
            optimizer.Step(1e-5);
            optimizer.ZeroGrad();
            lastLoss = loss.item<float>();
        }, warmups: Timing.StepWarmups, repetitions);
        long tokens = 2L * Pairs * Length;
        // The score head (hidden x 1) replaces the LM head: no vocab x hidden term.
        var c = model.Config;
        double flops = tokens * (6.0 * model.CountParameters().NonEmbedding + 12.0 * c.NumHiddenLayers * c.HiddenSize * Length);
        return Timing.Rate(id, "tokens/s", tokens, run, flops, notes: $"{Pairs} pairs x {Length}, loss {lastLoss:F3}");
    }
}
