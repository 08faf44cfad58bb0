using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Tests.Trainers;
using RlhfStudio.Engine.Tests.Training;
using RlhfStudio.Engine.Trainers;
using RlhfStudio.Engine.Trainers.Dpo;

namespace RlhfStudio.Engine.Tests.Dpo;

[Collection(SerialTrainingCollection.Name)]
public class DpoJobTests(TrainerWorkspace workspace) : IClassFixture<TrainerWorkspace>
{
    private static readonly string[] TrlMetrics =
    [
        MetricNames.TrainLoss, MetricNames.LearningRate, MetricNames.GradNorm, MetricNames.RewardsChosen, MetricNames.RewardsRejected,
        MetricNames.RewardsAccuracies, MetricNames.RewardsMargins, MetricNames.LogpsChosen, MetricNames.LogpsRejected,
        MetricNames.EvalLoss, "eval/" + MetricNames.RewardsAccuracies, "eval/" + MetricNames.RewardsMargins, "eval/" + MetricNames.LogpsChosen,
    ];

    [Fact]
    public void The_engine_registers_the_dpo_job()
    {
        Assert.IsType<DpoJob>(TrainingJobs.Create(new DpoSpec()));
    }

    [Theory]
    [InlineData(AdapterKind.Full, false)]
    [InlineData(AdapterKind.Lora, false)]
    [InlineData(AdapterKind.Full, true)]
    public void At_the_first_step_the_policy_is_its_reference_so_the_loss_is_log_2_and_the_rewards_are_zero(AdapterKind adapter, bool explicitReference)
    {
        using var dir = new TempDir();
        var spec = workspace.Dpo(maxSteps: 1, adapter: adapter, saveSteps: 0) with
        {
            Reference = explicitReference ? ModelRef.FromPath(workspace.ModelFolder) : null,
        };
        var (outcome, reporter) = JobRecorder.Run(spec, dir.Path);
        Assert.Equal(RunEndState.Completed, outcome.State);
        Assert.Equal(Math.Log(2), reporter.Series(MetricNames.TrainLoss)[1], 6);
        Assert.Equal(0, reporter.Series(MetricNames.RewardsChosen)[1], 6);
        Assert.Equal(0, reporter.Series(MetricNames.RewardsMargins)[1], 6);
        Assert.True(reporter.Series(MetricNames.LogpsChosen)[1] < 0);
        Assert.Contains(reporter.Events, e => e.Message.StartsWith("reference model: " + (adapter == AdapterKind.Lora
            ? "the policy with its LoRA adapters disabled" : explicitReference ? "the frozen model" : "a frozen copy"), StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(AdapterKind.Full)]
    [InlineData(AdapterKind.Lora)]
    public void Training_on_a_fixed_batch_lowers_the_loss_separates_the_rewards_and_writes_the_final_model(AdapterKind adapter)
    {
        using var dir = new TempDir();
        // 9 training pairs in one batch: every step sees the same pairs. A larger beta makes the same log-prob shift a larger
        // change of the loss, so that rank-4 adapters on two projections show it within 10 steps.
        var spec = workspace.Dpo(maxSteps: 10, adapter: adapter, saveSteps: 0, batchSize: 9, learningRate: adapter == AdapterKind.Lora ? 5e-2 : 5e-3) with { Beta = 0.5 };
        var (outcome, reporter) = JobRecorder.Run(spec, dir.Path);
        Assert.Equal(RunEndState.Completed, outcome.State);
        var losses = reporter.Series(MetricNames.TrainLoss).Values.ToList();
        Assert.True(losses[^1] < losses[0] * 0.75, string.Join(", ", losses));
        // Every reward is 0 at the first step (accuracy 0); afterwards most pairs rank chosen first.
        Assert.Equal(0, reporter.Series(MetricNames.RewardsAccuracies)[1]);
        Assert.True(reporter.Last(MetricNames.RewardsAccuracies) > 0.75, $"accuracy {reporter.Last(MetricNames.RewardsAccuracies)}");
        Assert.True(reporter.Last(MetricNames.RewardsMargins) > 0);
        Assert.True(reporter.Last(MetricNames.RewardsChosen) > reporter.Last(MetricNames.RewardsRejected));
        foreach (var name in TrlMetrics) Assert.True(double.IsFinite(reporter.Last(name)), name);
        // The sample table puts the policy's completion next to the reference model's.
        var (step, rows) = Assert.Single(reporter.SampleLog);
        Assert.Equal(10, step);
        Assert.Equal(3, rows.Count);   // the 3 evaluation pairs have 3 distinct prompts
        Assert.All(rows, r => Assert.NotNull(r.Reference));

        var record = ModelRecord.Read(outcome.FinalModel!)!;
        Assert.Equal(TrainingMethod.Dpo, record.Method);
        using var trained = ModelLoader.Load(outcome.FinalModel!);
        using var initial = ModelLoader.Load(workspace.ModelFolder);
        Assert.Contains(trained.HfWeights(), kv => !TestModels.Same(initial.HfWeights()[kv.Key], kv.Value));
        Assert.Equal(adapter == AdapterKind.Lora, File.Exists(Path.Combine(outcome.FinalModel!, "adapter", Lora.WeightsFileName)));
    }

    [Theory]
    [InlineData(AdapterKind.Full, false)]
    [InlineData(AdapterKind.Lora, true)]
    public void Resuming_continues_the_curve_exactly_and_cancellation_leaves_a_loadable_checkpoint(AdapterKind adapter, bool precompute)
    {
        using var dir = new TempDir();
        var spec = workspace.Dpo(maxSteps: 6, adapter: adapter, saveSteps: 0, precompute: precompute);
        var (full, fullReporter) = JobRecorder.Run(spec, dir["full"]);
        Assert.Equal(RunEndState.Completed, full.State);
        var (cancelled, _) = JobRecorder.Run(spec, dir["split"], cancelAfterStep: 2);
        Assert.Equal(RunEndState.Cancelled, cancelled.State);
        var checkpoint = cancelled.LastCheckpoint!;
        Assert.Equal(TrainingMethod.Dpo, ModelRecord.Read(checkpoint)!.Method);
        if (adapter == AdapterKind.Lora)
        {
            using var model = ModelLoader.Load(workspace.ModelFolder);
            Lora.Load(model, checkpoint);
            Assert.True(model.HasUnmergedAdapters);
        }
        else
        {
            using var model = ModelLoader.Load(checkpoint);
        }
        Assert.Equal(precompute, File.Exists(Path.Combine(checkpoint, ReferenceLogProbs.FileName)));

        var (resumed, resumedReporter) = JobRecorder.Run(spec, dir["split"], resumeFrom: checkpoint);
        Assert.Equal(RunEndState.Completed, resumed.State);
        var expected = fullReporter.Series(MetricNames.TrainLoss);
        var actual = resumedReporter.Series(MetricNames.TrainLoss);
        Assert.Equal([3L, 4L, 5L, 6L], actual.Keys);
        foreach (var step in actual.Keys) Assert.Equal(expected[step], actual[step]);
        Assert.Equal(fullReporter.Last(MetricNames.EvalLoss), resumedReporter.Last(MetricNames.EvalLoss));
        if (precompute)
            Assert.Contains(resumedReporter.Events, e => e.Message.StartsWith("reference log-probabilities read from checkpoint-2", StringComparison.Ordinal));
    }

    [Fact]
    public void Precomputing_the_reference_gives_the_same_training_curve_as_computing_it_on_the_fly()
    {
        using var dir = new TempDir();
        var (onTheFly, a) = JobRecorder.Run(workspace.Dpo(maxSteps: 4, saveSteps: 0), dir["a"]);
        var (precomputed, b) = JobRecorder.Run(workspace.Dpo(maxSteps: 4, saveSteps: 0, precompute: true), dir["b"]);
        Assert.Equal(RunEndState.Completed, onTheFly.State);
        Assert.Equal(RunEndState.Completed, precomputed.State);
        Assert.Contains(b.Events, e => e.Message.StartsWith("precomputed the reference log-probabilities of 12 pairs", StringComparison.Ordinal));
        foreach (var (step, loss) in a.Series(MetricNames.TrainLoss)) Assert.Equal(loss, b.Series(MetricNames.TrainLoss)[step], 4);
        Assert.Equal(a.Last(MetricNames.EvalLoss), b.Last(MetricNames.EvalLoss), 4);
    }

    [Fact]
    public void Data_without_preference_pairs_or_a_reference_with_another_tokenizer_fail_with_a_clear_message()
    {
        using var dir = new TempDir();
        var (noPairs, _) = JobRecorder.Run(workspace.Dpo() with { Dataset = new DatasetRef { Path = workspace.SftData } }, dir["a"]);
        Assert.Equal(RunEndState.Failed, noPairs.State);
        Assert.Contains("DPO needs preference pairs", noPairs.Message);

        var (badReference, _) = JobRecorder.Run(workspace.Dpo() with { Reference = ModelRef.FromPath(dir["missing"]) }, dir["b"]);
        Assert.Equal(RunEndState.Failed, badReference.State);
        Assert.Contains("missing", badReference.Message);
    }
}
