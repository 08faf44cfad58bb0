using System.Diagnostics;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Training;

/// <summary>Loop options that are not part of the run spec.</summary>
public sealed record TrainingLoopOptions
{
    /// <summary>Reshuffle the rows every epoch (off: dataset order).</summary>
    public bool Shuffle { get; init; } = true;
    /// <summary>Drop each epoch's last, smaller micro-batch (dataloader_drop_last; transformers' default is to keep it).</summary>
    public bool DropLast { get; init; } = false;
    /// <summary>Shortest time between two progress reports.</summary>
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromMilliseconds(250);
    /// <summary>Step durations averaged for the ETA.</summary>
    public int EtaWindow { get; init; } = 20;
}

/// <summary>How many optimisation steps a run takes.</summary>
public static class TrainingPlan
{
    /// <summary>Optimisation steps per epoch: micro-batches grouped by the accumulation count, the last group of an
    /// epoch possibly smaller (transformers &gt;= 4.50 rounds up; accumulation never crosses an epoch boundary).</summary>
    public static long StepsPerEpoch(int batchesPerEpoch, int gradientAccumulation) =>
        Math.Max(1, (batchesPerEpoch + gradientAccumulation - 1) / gradientAccumulation);

    /// <summary><c>max_steps</c> when set, else <c>ceil(epochs * steps_per_epoch)</c>, as transformers.</summary>
    public static long TotalSteps(TrainingSettings settings, int batchesPerEpoch) =>
        settings.MaxSteps > 0
            ? settings.MaxSteps
            : Math.Max(1, (long)Math.Ceiling(settings.Epochs * StepsPerEpoch(batchesPerEpoch, settings.GradientAccumulation)));
}

/// <summary>The optimisation loop every trainer shares, in nanoGPT's order: (cancel check) -> micro-batches with
/// gradient accumulation -> non-finite guard -> clip -> AdamW step at the scheduled rate -> zero grad -> log ->
/// evaluate -> checkpoint. Resumes from <see cref="RunContext.ResumeFrom"/> exactly: model part, optimiser moments,
/// schedule position, torch RNG and data position are restored, so the resumed steps equal the uninterrupted ones.
///
/// Reported at every <see cref="CheckpointSettings.LoggingSteps"/>: train/loss (mean of the step losses since the
/// last report), train/grad_norm (pre-clip, last step), train/learning_rate (the rate of the next step, which is what
/// transformers logs after its scheduler step), train/epoch, train/tokens_per_second and the task's metrics.</summary>
public sealed class TrainingLoop<TBatch>
{
    private readonly RunContext _context;
    private readonly ITrainingTask<TBatch> _task;
    private readonly TrainingLoopOptions _options;
    private readonly TrainingSettings _training;
    private readonly CheckpointSettings _checkpoints;
    private readonly IRunReporter _reporter;
    private readonly RunRecord _record;

    // Where training is.
    private long _lastEvalStep = -1;

    // The current logging window.
    private double _windowLoss;
    private int _windowSteps;
    private long _windowTokens;
    private long _windowItems;
    private double _windowSeconds;
    private double _lastGradNorm = double.NaN;
    private readonly Dictionary<string, double> _windowMetricSums = new(StringComparer.Ordinal);

    public TrainingLoop(RunContext context, ITrainingTask<TBatch> task, TrainingLoopOptions? options = null)
    {
        _context = context;
        _task = task;
        _options = options ?? new TrainingLoopOptions();
        _training = context.Spec.Training;
        _checkpoints = context.Spec.Checkpoints;
        _reporter = context.Reporter;
        _record = new RunRecord(context);
    }

    /// <summary>Optimisation steps completed.</summary>
    public long GlobalStep => _record.Step;

    /// <summary>Trains to the end, to cancellation or to a failure. On completion the outcome carries the last checkpoint;
    /// the trainer writes its final model and fills <see cref="RunOutcome.FinalModel"/>.</summary>
    public RunOutcome Run()
    {
        var output = _context.OutputDirectory;
        foreach (var leftover in Checkpoints.DeleteLeftovers(output))
            _reporter.Event(RunEvent.Info($"removed {Path.GetFileName(leftover)}, left by an interrupted save"));

        var sampler = new IndexSampler(_task.DatasetSize, _training.BatchSize, _context.Spec.Seed, _options.Shuffle, _options.DropLast);
        long totalSteps = TrainingPlan.TotalSteps(_training, sampler.BatchesPerEpoch);
        var schedule = LearningRateSchedule.For(_training, totalSteps);
        using var optimizer = AdamWOptimizer.For(_task.Parameters, _training);
        optimizer.ZeroGrad();

        if (_context.ResumeFrom is { } resumeFrom)
        {
            var failure = Resume(resumeFrom, sampler, schedule, optimizer);
            if (failure is not null) return failure;
        }
        else
        {
            // Dropout and any other draw without its own generator follow the run's seed (transformers' set_seed).
            random.manual_seed(_context.Spec.Seed);
        }

        var meter = new ProgressMeter(_reporter, totalSteps, _options.ProgressInterval, _options.EtaWindow);
        meter.Report(_record.Step, force: true);
        while (_record.Step < totalSteps)
        {
            if (_context.Cancellation.IsCancellationRequested) return Cancel(sampler, schedule, optimizer, totalSteps, meter);

            var started = Stopwatch.GetTimestamp();
            var failure = TrainStep(sampler, schedule, optimizer, totalSteps);
            GC.Collect(0);   // frees Scalars no dispose scope tracks (see notes/torchsharp.md)
            if (failure is not null) return failure;
            var took = Stopwatch.GetElapsedTime(started);
            meter.StepTook(took);
            _windowSeconds += took.TotalSeconds;

            bool last = _record.Step == totalSteps;
            if (_record.Step % _checkpoints.LoggingSteps == 0 || last) Log(sampler, schedule);
            if ((_checkpoints.EvalSteps > 0 && _record.Step % _checkpoints.EvalSteps == 0) || last)
            {
                try
                {
                    Evaluate(meter);
                }
                catch (OperationCanceledException) when (_context.Cancellation.IsCancellationRequested)
                {
                    // Cancelled while generating the evaluation's samples: the step itself is complete, so it is checkpointed.
                    return Cancel(sampler, schedule, optimizer, totalSteps, meter);
                }
            }
            if ((_checkpoints.SaveSteps > 0 && _record.Step % _checkpoints.SaveSteps == 0) || last)
            {
                meter.Report(_record.Step, "save", force: true);
                var saveFailure = Save(sampler, schedule, optimizer, totalSteps);
                if (saveFailure is not null) return saveFailure;
            }
            meter.Report(_record.Step, force: last);
        }
        return RunOutcome.Completed(null, _record.LastCheckpoint);
    }

    // One optimisation step; returns a failure outcome when a non-finite loss stops the run.
    private RunOutcome? TrainStep(IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer, long totalSteps)
    {
        using var scope = NewDisposeScope();
        int count = Math.Min(_training.GradientAccumulation, sampler.RemainingInEpoch);
        var microBatches = new List<MicroBatch<TBatch>>(count);
        for (int i = 0; i < count; i++) microBatches.Add(_task.Collate(sampler.Next()));

        var result = GradientAccumulation.Accumulate(_task, microBatches);
        double gradNorm = result.IsFinite ? GradientClipping.ClipByTotalNorm(_task.Parameters, _training.MaxGradNorm) : double.NaN;
        string? problem = result.Problem ?? (double.IsFinite(gradNorm) ? null : $"the gradient norm is {GradientAccumulation.Describe(gradNorm)}");
        long stepNumber = _record.Step + 1;
        if (problem is not null)
        {
            optimizer.ZeroGrad();
            if (!_context.Spec.SkipNonFiniteLoss)
                return RunOutcome.Failed($"Training stopped at step {stepNumber} of {totalSteps}: {problem}. Lower the learning rate, " +
                    "check the data for empty or broken rows, or set skipNonFiniteLoss to skip such batches.", _record.LastCheckpoint);
            _reporter.Event(RunEvent.Warn("nonfinite-loss-skipped", $"step {stepNumber}: {problem}; the batch was skipped and the weights left unchanged", stepNumber));
        }
        else
        {
            optimizer.Step(schedule.At(_record.Step));
            optimizer.ZeroGrad();
            _windowLoss += result.Loss;
            _windowSteps++;
            _windowItems += result.Items;
            _lastGradNorm = gradNorm;
            foreach (var (name, v) in result.MetricSums) _windowMetricSums[name] = _windowMetricSums.GetValueOrDefault(name) + v;
        }
        // A skipped step still consumes its data and its place in the schedule, so the run ends where planned.
        _record.Step = stepNumber;
        _record.TokensSeen += result.Tokens;
        _windowTokens += result.Tokens;
        return null;
    }

    private void Log(IndexSampler sampler, LearningRateSchedule schedule)
    {
        var values = new Dictionary<string, double>(StringComparer.Ordinal)
        {
            [MetricNames.LearningRate] = schedule.At(_record.Step),
            [MetricNames.Epoch] = sampler.EpochProgress,
        };
        if (_windowSteps > 0)
        {
            values[MetricNames.TrainLoss] = _windowLoss / _windowSteps;
            values[MetricNames.GradNorm] = _lastGradNorm;
            foreach (var (name, sum) in _windowMetricSums) values[name] = sum / _windowItems;
        }
        if (_windowSeconds > 0) values[MetricNames.TokensPerSecond] = _windowTokens / _windowSeconds;
        Report(values);
        _windowLoss = 0;
        _windowSteps = 0;
        _windowTokens = 0;
        _windowItems = 0;
        _windowSeconds = 0;
        _windowMetricSums.Clear();
    }

    private void Evaluate(ProgressMeter meter)
    {
        if (_lastEvalStep == _record.Step) return;
        meter.Report(_record.Step, "eval", force: true);
        IReadOnlyDictionary<string, double>? metrics;
        using (var scope = NewDisposeScope())
        using (var noGrad = no_grad())
            metrics = _task.Evaluate(_record.Step);
        GC.Collect(0);
        _lastEvalStep = _record.Step;
        if (metrics is { Count: > 0 }) Report(metrics);
    }

    private void Report(IReadOnlyDictionary<string, double> values) => _record.Report(values);

    private RunOutcome Cancel(IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer, long totalSteps, ProgressMeter meter) =>
        _record.Cancel(totalSteps, meter, () => Save(sampler, schedule, optimizer, totalSteps));

    private RunOutcome? Save(IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer, long totalSteps) =>
        _record.Save(sampler, sampler.EpochProgress, totalSteps, schedule, optimizer, _task.SaveModel);

    // Restores everything a checkpoint holds; returns a failure outcome naming the problem when it cannot.
    private RunOutcome? Resume(string folder, IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer) =>
        _record.Resume(folder, sampler, schedule, optimizer, "training rows", (checkpoint, _) =>
        {
            _task.LoadModel(checkpoint);
            return null;
        });
}
