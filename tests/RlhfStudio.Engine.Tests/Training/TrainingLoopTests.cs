using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Training;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Training;

[Collection(SerialTrainingCollection.Name)]
public class TrainingLoopTests
{
    [Fact]
    public void Loss_goes_down_on_a_fixed_batch_and_every_parameter_moves()
    {
        using var dir = new TempDir();
        using var task = new TinyLmTask();
        var before = task.Parameters.ToDictionary(p => p.Name, p => p.Parameter.detach().clone());
        var (outcome, reporter) = TrainingSpecs.Run(task, TrainingSpecs.Spec(maxSteps: 20, batchSize: 6, accumulation: 1, saveSteps: 0, learningRate: 1e-2), dir.Path);

        Assert.Equal(RunEndState.Completed, outcome.State);
        var losses = reporter.Losses();
        Assert.Equal(Enumerable.Range(1, 20).Select(i => (long)i), losses.Keys);
        Assert.True(losses[20] < 0.7 * losses[1], $"loss went from {losses[1]} to {losses[20]}");
        foreach (var p in task.Parameters)
            Assert.False(TestModels.Same(before[p.Name], p.Parameter), $"{p.Name} did not change");

        var last = reporter.MetricLog.Last(m => m.Values.ContainsKey(MetricNames.TrainLoss)).Values;
        Assert.Equal(0.0, last[MetricNames.LearningRate]);   // cosine ends at 0; logged after the step, as transformers
        Assert.True(last[MetricNames.GradNorm] > 0);
        Assert.True(last[MetricNames.TokensPerSecond] > 0);
        Assert.InRange(last[MetricNames.MeanTokenAccuracy], 0, 1);
        Assert.Equal(20.0, last[MetricNames.Epoch]);   // one batch per epoch
        Assert.Equal(1e-2 / 2, reporter.MetricLog[0].Values[MetricNames.LearningRate], 12);   // after step 1 of 2 warmup steps

        Assert.Equal(Path.Combine(dir.Path, "checkpoint-20"), outcome.LastCheckpoint);   // saved at the end even with saveSteps 0
        var progress = reporter.ProgressLog.Last();
        Assert.Equal((20L, 20L), (progress.Step, progress.TotalSteps));
        Assert.Equal(TimeSpan.Zero, progress.Eta);
    }

    [Fact]
    public void Total_steps_come_from_epochs_and_accumulation_never_crosses_an_epoch()
    {
        using var dir = new TempDir();
        using var task = new TinyLmTask();
        // 6 rows, batch 2: 3 micro-batches per epoch; accumulation 2: steps of 2 and 1 micro-batches, 2 steps per epoch.
        var (outcome, reporter) = TrainingSpecs.Run(task, TrainingSpecs.Spec(maxSteps: 0, epochs: 2, batchSize: 2, accumulation: 2, saveSteps: 0), dir.Path);
        Assert.Equal(RunEndState.Completed, outcome.State);
        Assert.Equal(4, reporter.ProgressLog.Last().TotalSteps);
        Assert.Equal(12, task.Collated.Sum(c => c.Count));
        // Epochs count micro-batches, as transformers' logged epoch: 2 of 3 after the first step.
        Assert.Equal([2.0 / 3, 1.0, 1 + 2.0 / 3, 2.0], reporter.MetricLog.Select(m => m.Values[MetricNames.Epoch]));
        Assert.Equal(Enumerable.Range(0, 6), task.Collated.Take(3).SelectMany(c => c).Order());   // each epoch sees every row once
        Assert.Equal(Enumerable.Range(0, 6), task.Collated.Skip(3).SelectMany(c => c).Order());
    }

    [Fact]
    public void A_NaN_loss_stops_the_run_with_a_message_naming_the_step()
    {
        using var dir = new TempDir();
        using var task = new TinyLmTask();
        task.NaNAtCall.Add(3);   // accumulation 1: the third step
        var (outcome, reporter) = TrainingSpecs.Run(task, TrainingSpecs.Spec(maxSteps: 6, accumulation: 1, saveSteps: 2), dir.Path);
        Assert.Equal(RunEndState.Failed, outcome.State);
        Assert.Contains("step 3 of 6", outcome.Message);
        Assert.Contains("NaN", outcome.Message);
        Assert.Contains("skipNonFiniteLoss", outcome.Message);
        Assert.Equal(Path.Combine(dir.Path, "checkpoint-2"), outcome.LastCheckpoint);
        Assert.Equal([1L, 2], reporter.Losses().Keys);
    }

    [Fact]
    public void With_skipping_on_a_NaN_batch_is_skipped_recorded_and_leaves_the_weights_alone()
    {
        using var dir = new TempDir();
        using var task = new TinyLmTask();
        task.NaNAtCall.Add(3);
        var spec = TrainingSpecs.Spec(maxSteps: 5, accumulation: 1, saveSteps: 0, skipNonFinite: true);
        Dictionary<string, Tensor>? atStep2 = null;
        var reporter = new SnapshotReporter(2, () => atStep2 = task.Parameters.ToDictionary(p => p.Name, p => p.Parameter.detach().clone()));
        Dictionary<string, Tensor>? atStep3 = null;
        reporter.Then(3, () => atStep3 = task.Parameters.ToDictionary(p => p.Name, p => p.Parameter.detach().clone()));
        var outcome = new TrainingLoop<TinyLmTask.Batch>(new RunContext(spec, dir.Path, reporter, CancellationToken.None), task).Run();

        Assert.Equal(RunEndState.Completed, outcome.State);
        var skipped = Assert.Single(reporter.Events, e => e.Code == "nonfinite-loss-skipped");
        Assert.Equal(3, skipped.Step);
        Assert.Contains("NaN", skipped.Message);
        Assert.Equal([1L, 2, 4, 5], reporter.Losses().Keys);   // nothing to average at step 3
        foreach (var (name, t) in atStep2!) Assert.True(TestModels.Same(t, atStep3![name]), $"{name} changed in the skipped step");
    }

    [Fact]
    public void Resuming_reproduces_the_uninterrupted_losses_exactly()
    {
        var spec = TrainingSpecs.Spec(maxSteps: 10, batchSize: 2, accumulation: 2, saveSteps: 5);
        using var straightDir = new TempDir();
        SortedDictionary<long, double> straight;
        using (var task = new TinyLmTask())
            straight = TrainingSpecs.Run(task, spec, straightDir.Path).Reporter.Losses();
        Assert.Equal(10, straight.Count);

        using var dir = new TempDir();
        RunOutcome first;
        using (var task = new TinyLmTask())
            (first, _) = TrainingSpecs.Run(task, spec, dir.Path, cancelAfterStep: 5);
        Assert.Equal(RunEndState.Cancelled, first.State);
        Assert.Equal(Path.Combine(dir.Path, "checkpoint-5"), first.LastCheckpoint);

        // Fresh model (other initial weights), optimiser, sampler and RNG: everything must come from the checkpoint.
        random.manual_seed(12345);
        using var resumedTask = new TinyLmTask(initSeed: 99);
        var (second, reporter) = TrainingSpecs.Run(resumedTask, spec, dir.Path, resumeFrom: first.LastCheckpoint);
        Assert.Equal(RunEndState.Completed, second.State);
        var resumed = reporter.Losses();
        Assert.Equal([6L, 7, 8, 9, 10], resumed.Keys);
        foreach (var (step, loss) in resumed) Assert.Equal(straight[step], loss);
        Assert.Contains(reporter.Events, e => e.Message.StartsWith("resumed from checkpoint-5 at step 5"));
    }

    [Fact]
    public void Cancelling_between_steps_saves_a_loadable_checkpoint_that_resumes_exactly()
    {
        var spec = TrainingSpecs.Spec(maxSteps: 8, batchSize: 2, accumulation: 2, saveSteps: 5);
        using var straightDir = new TempDir();
        SortedDictionary<long, double> straight;
        using (var task = new TinyLmTask())
            straight = TrainingSpecs.Run(task, spec, straightDir.Path).Reporter.Losses();

        using var dir = new TempDir();
        using (var task = new TinyLmTask())
        {
            var (outcome, reporter) = TrainingSpecs.Run(task, spec, dir.Path, cancelAfterStep: 3);
            Assert.Equal(RunEndState.Cancelled, outcome.State);
            Assert.Equal(Path.Combine(dir.Path, "checkpoint-3"), outcome.LastCheckpoint);
            Assert.Equal(3, Assert.Single(reporter.Checkpoints).Step);
            Assert.Equal([1L, 2, 3], reporter.Losses().Keys);   // stopped at the boundary, before step 4
        }
        var latest = Checkpoints.LoadLatestComplete(dir.Path);
        Assert.NotNull(latest);
        Assert.Equal(3, latest.Step);
        Assert.Equal(new SamplerState(1, 2, 5, 6, 2, false, true), latest.State.Sampler);   // 3 steps = 2 + 1 + 2 micro-batches of 3 per epoch

        using var resumedTask = new TinyLmTask(initSeed: 123);
        var (second, resumedReporter) = TrainingSpecs.Run(resumedTask, spec, dir.Path, resumeFrom: latest.Path);
        Assert.Equal(RunEndState.Completed, second.State);
        foreach (var (step, loss) in resumedReporter.Losses()) Assert.Equal(straight[step], loss);
        Assert.Equal(5, resumedReporter.Losses().Count);
    }

    [Fact]
    public void Resuming_with_another_batch_size_is_refused_by_name()
    {
        using var dir = new TempDir();
        string checkpoint;
        using (var task = new TinyLmTask())
            checkpoint = TrainingSpecs.Run(task, TrainingSpecs.Spec(maxSteps: 2, saveSteps: 0), dir.Path).Outcome.LastCheckpoint!;
        using var other = new TinyLmTask();
        var (outcome, _) = TrainingSpecs.Run(other, TrainingSpecs.Spec(maxSteps: 4, batchSize: 3), dir.Path, resumeFrom: checkpoint);
        Assert.Equal(RunEndState.Failed, outcome.State);
        Assert.Contains("batch size 2", outcome.Message);
        Assert.Contains("batch size 3", outcome.Message);
    }

    [Fact]
    public void Evaluation_cadence_best_checkpoint_and_retention()
    {
        using var dir = new TempDir();
        var evalLoss = new Dictionary<long, double> { [2] = 0.5, [4] = 0.2, [6] = 0.4, [8] = 0.3 };
        var evaluated = new List<long>();
        using var task = new TinyLmTask
        {
            Eval = step =>
            {
                evaluated.Add(step);
                Assert.False(is_grad_enabled());
                return new Dictionary<string, double> { [MetricNames.EvalLoss] = evalLoss[step] };
            },
        };
        var spec = TrainingSpecs.Spec(maxSteps: 8, accumulation: 1, saveSteps: 2, keepLast: 1, evalSteps: 2);
        var (outcome, reporter) = TrainingSpecs.Run(task, spec, dir.Path);

        Assert.Equal(RunEndState.Completed, outcome.State);
        Assert.Equal([2L, 4, 6, 8], evaluated);
        Assert.Equal([0.5, 0.2, 0.4, 0.3], reporter.Checkpoints.Select(c => c.Metrics[MetricNames.EvalLoss]));
        Assert.Equal([4L, 8], Checkpoints.ListComplete(dir.Path).Select(c => c.Step));   // the best (step 4) and the last
        var state = Checkpoints.Open(Path.Combine(dir.Path, "checkpoint-8")).State;
        Assert.Equal(0.2, state.BestMetric);
        Assert.Equal(Path.Combine(dir.Path, "checkpoint-4"), state.BestModelCheckpoint);
        Assert.Equal(0.3, state.Metric);
    }

    [Fact]
    public void A_run_leaves_no_live_tensor_behind()
    {
        using var dir = new TempDir();
        using var task = new TinyLmTask();
        long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var (outcome, _) = TrainingSpecs.Run(task, TrainingSpecs.Spec(maxSteps: 4, saveSteps: 2), dir.Path);
        Assert.Equal(RunEndState.Completed, outcome.State);
        Assert.Equal(before, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    /// <summary>Runs an action when a given step's metrics arrive.</summary>
    private sealed class SnapshotReporter : IRunReporter
    {
        private readonly Dictionary<long, Action> _actions = new();
        private readonly RecordingReporter _inner = new();
        public SnapshotReporter(long step, Action action) => _actions[step] = action;
        public void Then(long step, Action action) => _actions[step] = action;
        public List<RunEvent> Events => _inner.Events;
        public SortedDictionary<long, double> Losses() => _inner.Losses();

        public void Metrics(long step, IReadOnlyDictionary<string, double> values)
        {
            _inner.Metrics(step, values);
            if (_actions.TryGetValue(step, out var a)) a();
        }

        public void Samples(long step, IReadOnlyList<SampleRow> rows) { }
        public void Checkpoint(CheckpointReport checkpoint) => _inner.Checkpoint(checkpoint);
        public void Progress(RunProgress progress) => _inner.Progress(progress);
        public void Event(RunEvent runEvent) => _inner.Event(runEvent);
    }
}
