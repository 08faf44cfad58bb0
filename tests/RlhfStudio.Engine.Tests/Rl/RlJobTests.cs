using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Tests.Trainers;
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Trainers.Rl;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Tests.Rl;

public class RlJobTests
{
    private static (RunOutcome Outcome, JobRecorder Reporter) Run(RunSpec spec, string output, long? cancelAfter = null, string? resumeFrom = null)
    {
        var reporter = new JobRecorder { CancelAfterStep = cancelAfter };
        var job = TrainingJobs.Create(spec);
        var outcome = job.Run(new RunContext(spec, output, reporter, reporter.Cancellation.Token, resumeFrom));
        return (outcome, reporter);
    }

    [Fact]
    public void Ppo_and_rloo_are_registered()
    {
        Assert.True(TrainingJobs.IsAvailable(TrainingMethod.Ppo));
        Assert.True(TrainingJobs.IsAvailable(TrainingMethod.Rloo));
        Assert.IsType<PpoJob>(TrainingJobs.Create(RlTestKit.PpoSpec()));
    }

    [Fact]
    public void Resume_continues_the_curve_and_cancellation_leaves_a_loadable_checkpoint()
    {
        var spec = RlTestKit.PpoSpec(maxSteps: 3, epochs: 1) with { Checkpoints = RlTestKit.PpoSpec().Checkpoints with { SaveSteps = 0 }, KlCoef = 0.2 };
        using var straightDirFolder = new TempDir();
        var straightDir = straightDirFolder.Path;
        var (straight, full) = Run(spec, straightDir);
        Assert.Equal(RunEndState.Completed, straight.State);
        Assert.Contains(full.Events, e => e.Code == RlSetup.PresetReferenceWarning);

        using var dirFolder = new TempDir();
        var dir = dirFolder.Path;
        var (cancelled, first) = Run(spec, dir, cancelAfter: 2);
        Assert.Equal(RunEndState.Cancelled, cancelled.State);
        var checkpoint = Checkpoints.Open(cancelled.LastCheckpoint!);
        Assert.Equal(2, checkpoint.Step);
        // The checkpoint is a PEFT adapter folder (plus the value model's) that loads onto the starting model.
        using (var model = ModelPresets.Create("tiny", RlTestKit.Tokenizer.VocabSize, seed: spec.Seed))
        {
            Lora.Load(model, checkpoint.Path);
            Assert.NotEmpty(Lora.AdapterParameters(model));
        }
        Assert.True(File.Exists(Path.Combine(checkpoint.Path, RlCheckpoint.ValueFolder, Lora.WeightsFileName)));
        Assert.Equal(2, RlState.Load(checkpoint.Path).Step);

        var (resumed, second) = Run(spec, dir, resumeFrom: checkpoint.Path);
        Assert.Equal(RunEndState.Completed, resumed.State);
        Assert.DoesNotContain(second.MetricLog, m => m.Step <= 2);
        foreach (long step in new long[] { 3 })
            foreach (var name in new[] { MetricNames.ObjectiveKl, MetricNames.ObjectiveScores, MetricNames.LossPolicy, MetricNames.LossValue,
                         MetricNames.PolicyApproxKl, MetricNames.Episode, MetricNames.LearningRate })
                Assert.Equal(full.At(step)[name], second.At(step)[name], 9);
        Assert.True(full.At(3)[MetricNames.ObjectiveKl] != 0, "the policy moved away from the reference");
        Assert.True(Directory.Exists(resumed.FinalModel));
        using (var final = ModelLoader.Load(resumed.FinalModel!)) Assert.False(final.HasUnmergedAdapters);
        Directory.Delete(straightDir, recursive: true);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void Freezing_the_actor_trains_only_the_value_function_for_the_first_steps()
    {
        var spec = RlTestKit.PpoSpec(maxSteps: 3, epochs: 1, adapter: AdapterKind.Full) with
        {
            Checkpoints = RlTestKit.PpoSpec().Checkpoints with { SaveSteps = 0 }, SharedValueHead = true, FreezeActorSteps = 1,
        };
        Assert.Empty(spec.Validate());
        Assert.Contains((spec with { FreezeActorSteps = 3 }).Validate(), e => e.Field == "freezeActorSteps");
        using var dirFolder = new TempDir();
        var dir = dirFolder.Path;
        var (outcome, reporter) = Run(spec, dir);
        Assert.Equal(RunEndState.Completed, outcome.State);
        Assert.Contains(reporter.Events, e => e.Message.Contains("policy frozen for the first 1 steps"));
        // Step 1 moved only the value head: step 2's rollout still comes from the reference's weights (KL exactly 0),
        // and its value loss differs from step 1's; step 2 trained the policy, so step 3's KL is not 0.
        Assert.Equal(0.0, reporter.At(2)[MetricNames.ObjectiveKl]);
        Assert.NotEqual(0.0, reporter.At(3)[MetricNames.ObjectiveKl]);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void A_shared_value_head_is_checkpointed_and_resume_continues_its_curve()
    {
        var spec = RlTestKit.PpoSpec(maxSteps: 3, epochs: 1, adapter: AdapterKind.Full) with
        {
            Checkpoints = RlTestKit.PpoSpec().Checkpoints with { SaveSteps = 0 }, KlCoef = 0.2, SharedValueHead = true,
        };
        Assert.Empty(spec.Validate());
        Assert.Contains(spec with { ValueModel = ModelRef.FromPath("/tmp/x") } is var both ? both.Validate() : [], e => e.Field == "valueModel");
        using var straightDirFolder = new TempDir();
        var straightDir = straightDirFolder.Path;
        var (straight, full) = Run(spec, straightDir);
        Assert.Equal(RunEndState.Completed, straight.State);
        Assert.Contains(full.Events, e => e.Message.Contains("value head on the policy's trunk"));

        using var dirFolder = new TempDir();
        var dir = dirFolder.Path;
        var (cancelled, _) = Run(spec, dir, cancelAfter: 2);
        Assert.Equal(RunEndState.Cancelled, cancelled.State);
        var checkpoint = cancelled.LastCheckpoint!;
        Assert.True(File.Exists(Path.Combine(checkpoint, ValueHead.FileName)));
        Assert.False(Directory.Exists(Path.Combine(checkpoint, RlCheckpoint.ValueFolder)));
        var (resumed, second) = Run(spec, dir, resumeFrom: checkpoint);
        Assert.Equal(RunEndState.Completed, resumed.State);
        foreach (var name in new[] { MetricNames.ObjectiveScores, MetricNames.LossPolicy, MetricNames.LossValue, MetricNames.ObjectiveKl })
            Assert.Equal(full.At(3)[name], second.At(3)[name], 9);
        Assert.True(full.At(3)[MetricNames.LossValue] > 0);
        Directory.Delete(straightDir, recursive: true);
        Directory.Delete(dir, recursive: true);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]   // log-probabilities from the sampling loop (TRL's route)
    public void Rloo_job_trains_with_k_samples_per_prompt(bool recomputeLogProbs)
    {
        var ppo = RlTestKit.PpoSpec(maxSteps: 2, adapter: AdapterKind.Full, epochs: 1, miniBatches: 1);
        var spec = new RlooSpec
        {
            Model = ppo.Model, Precision = ppo.Precision, Seed = ppo.Seed, MaxLength = ppo.MaxLength, Training = ppo.Training,
            Dataset = ppo.Dataset, Adapter = ppo.Adapter, Sampling = ppo.Sampling, Checkpoints = ppo.Checkpoints with { SaveSteps = 0 }, RlooK = 2, NumPpoEpochs = 1,
            RecomputeLogProbs = recomputeLogProbs,
        };
        using var dirFolder = new TempDir();
        var dir = dirFolder.Path;
        var (outcome, reporter) = Run(spec, dir);
        Assert.True(outcome.State == RunEndState.Completed, outcome.Message);
        var metrics = reporter.At(2);
        Assert.Equal(8, metrics[MetricNames.Episode]);
        // One epoch, one mini-batch: the only update sees ratio 1 (REINFORCE with the leave-one-out baseline).
        Assert.Equal(1.0, metrics[MetricNames.ValueRatio], recomputeLogProbs ? 6 : 4);
        Assert.Equal(0.0, metrics[MetricNames.PolicyClipFrac]);
        Assert.False(metrics.ContainsKey(MetricNames.LossValue));
        Assert.All(metrics.Values, v => Assert.True(double.IsFinite(v)));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void Preflight_refuses_a_reward_model_without_a_score_head_and_uneven_batches()
    {
        using var dirFolder = new TempDir();
        var dir = dirFolder.Path;
        var causal = Path.Combine(dir, "causal");
        using (var model = ModelPresets.Create("tiny", RlTestKit.Tokenizer.VocabSize, seed: 1, eosTokenIds: [RlTestKit.Tokenizer.EosId!.Value]))
            ModelSaver.Save(model, causal);
        RlTestKit.Tokenizer.Save(causal);

        var noHead = RlTestKit.PpoSpec() with { Reward = new RewardSource { ModelPath = causal } };
        var (outcome, _) = Run(noHead, Path.Combine(dir, "a"));
        Assert.Equal(RunEndState.Failed, outcome.State);
        Assert.Contains("no score head", outcome.Message);

        var asPolicy = Path.Combine(dir, "rm");
        using (var rm = ModelLoader.LoadScoreModel(causal)) ModelSaver.Save(rm, asPolicy);
        var wrongPolicy = RlTestKit.PpoSpec() with { Model = ModelRef.FromPath(asPolicy) };
        (outcome, _) = Run(wrongPolicy, Path.Combine(dir, "b"));
        Assert.Equal(RunEndState.Failed, outcome.State);
        Assert.Contains("not a causal language model", outcome.Message);

        var uneven = RlTestKit.PpoSpec() with { Training = RlTestKit.PpoSpec().Training with { GradientAccumulation = 4 } };
        (outcome, _) = Run(uneven, Path.Combine(dir, "c"));
        Assert.Equal(RunEndState.Failed, outcome.State);
        Assert.Contains("gradientAccumulation", outcome.Message);
        Directory.Delete(dir, recursive: true);
    }
}
