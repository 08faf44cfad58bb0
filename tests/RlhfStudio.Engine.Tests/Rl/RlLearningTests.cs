using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Tests.Trainers;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Trainers;
using RlhfStudio.Engine.Trainers.Rl;

namespace RlhfStudio.Engine.Tests.Rl;

/// <summary>The end-to-end check the invariant tests cannot give: optimising a reward that a tiny random policy can
/// raise quickly (the share of plain ASCII characters in its response; at random about two thirds of the
/// built-in tokenizer's ids decode to ASCII) must raise it. A flipped advantage sign, log-probabilities
/// misaligned with the sampled tokens or a loss on the wrong rows would leave it flat or push it down.</summary>
public sealed class RlLearningTests
{
    private static double AsciiShare(string prompt, string response) =>
        response.Length == 0 ? 0 : response.Count(c => c < 128 && !char.IsControl(c)) / (double)response.Length;

    private static (double First, double Last) Run(RunSpec spec, IRlObjective objective)
    {
        using var models = RlTestKit.Models(lora: false, scorer: new BuiltinScorer("ascii-share", AsciiShare));
        var reporter = new JobRecorder();
        using var output = new TempDir();
        var trainer = new RlTrainer(new RunContext(spec, output.Path, reporter, CancellationToken.None), models,
            PromptSet.Of(RlTestKit.Prompts(64)), objective);
        Assert.Equal(RunEndState.Completed, trainer.Run().State);
        var scores = reporter.MetricLog.Select(m => m.Values[MetricNames.ObjectiveScores]).ToList();
        return (scores.Take(5).Average(), scores.TakeLast(5).Average());
    }

    [Fact]
    public void Ppo_raises_the_reward_it_optimises()
    {
        var spec = RlTestKit.PpoSpec(maxSteps: 30, batch: 16, adapter: AdapterKind.Full, epochs: 2, miniBatches: 2) with
        {
            Checkpoints = new CheckpointSettings { SaveSteps = 0, KeepLast = 0, BestMetric = MetricNames.ObjectiveScores, LowerIsBetter = false },
            SampleSteps = 100,
        };
        using var objective = new PpoObjective(spec.VfCoef, spec.ClipRange, spec.ClipRangeValue, spec.Gamma, spec.Lam, spec.WhitenRewards);
        var (first, last) = Run(spec, objective);
        Assert.True(last > first + 0.03, $"PPO: reward {first:F3} over the first 5 steps, {last:F3} over the last 5");
    }

    [Fact]
    public void Rloo_raises_the_reward_it_optimises()
    {
        var ppo = RlTestKit.PpoSpec(maxSteps: 30, batch: 16, adapter: AdapterKind.Full);
        var spec = new RlooSpec
        {
            Model = ppo.Model, Dataset = ppo.Dataset, Precision = ppo.Precision, Seed = ppo.Seed, MaxLength = ppo.MaxLength,
            Training = ppo.Training, Adapter = ppo.Adapter, Sampling = ppo.Sampling, RlooK = 4, NumPpoEpochs = 2, NumMiniBatches = 2, SampleSteps = 100,
            Checkpoints = new CheckpointSettings { SaveSteps = 0, KeepLast = 0, BestMetric = MetricNames.ObjectiveScores, LowerIsBetter = false },
        };
        using var objective = new RlooObjective(spec.RlooK, spec.ClipRange, spec.NormalizeAdvantage);
        var (first, last) = Run(spec, objective);
        Assert.True(last > first + 0.03, $"RLOO: reward {first:F3} over the first 5 steps, {last:F3} over the last 5");
    }
}
