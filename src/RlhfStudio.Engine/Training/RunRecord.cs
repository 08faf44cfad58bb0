// What a trainer keeps about its run between checkpoints, shared by TrainingLoop (SFT, reward, DPO) and RlTrainer
// (PPO, RLOO) so that both write, retain, cancel and resume checkpoints the same way:
//   - the step, the tokens seen, the metrics reported (the latest value of each and the log tail a checkpoint keeps);
//   - the best checkpoint by the run's best metric and the last one written;
//   - Save: checkpoint-N written atomically (the trainer's model files, then optimizer, schedule, RNG and trainer
//     state), reported to the host, then retention;
//   - Cancel: a checkpoint at the step reached (unless one was just written), then the Cancelled outcome;
//   - Resume: the checkpoint verified against this run (same data size, batch size and seed), then everything restored.
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Training;

internal sealed class RunRecord(RunContext context)
{
    private readonly IRunReporter _reporter = context.Reporter;
    private readonly CheckpointSettings _checkpoints = context.Spec.Checkpoints;
    private readonly Dictionary<string, double> _latest = new(StringComparer.Ordinal);
    private readonly List<LogEntry> _history = [];
    private long _lastSavedStep = -1;
    private double? _bestMetric;
    private string? _bestCheckpoint;

    /// <summary>Optimisation steps completed.</summary>
    public long Step { get; set; }
    public long TokensSeen { get; set; }
    /// <summary>The newest complete checkpoint of this run (null before the first).</summary>
    public string? LastCheckpoint { get; private set; }

    /// <summary>Sends <paramref name="values"/> to the host at the current step and remembers them for checkpoints.</summary>
    public void Report(IReadOnlyDictionary<string, double> values)
    {
        _reporter.Metrics(Step, values);
        foreach (var (k, v) in values) _latest[k] = v;
        _history.Add(new LogEntry(Step, values));
        if (_history.Count > TrainerState.LogHistoryTail) _history.RemoveRange(0, _history.Count - TrainerState.LogHistoryTail);
    }

    /// <summary>Writes checkpoint-{Step}: <paramref name="saveModel"/> writes the trainer's weights into the folder, then the
    /// optimizer, schedule, RNG and trainer state follow. Returns a failure outcome when the disk refuses.</summary>
    public RunOutcome? Save(IndexSampler sampler, double epoch, long totalSteps, LearningRateSchedule schedule, AdamWOptimizer optimizer,
        Action<string> saveModel)
    {
        var metricName = _checkpoints.BestMetric;
        double? metric = _latest.TryGetValue(metricName, out var m) && double.IsFinite(m) ? m : null;
        var path = Path.Combine(context.OutputDirectory, CheckpointFolder.NameFor(Step));
        if (metric is double value && (_bestMetric is not double best || (_checkpoints.LowerIsBetter ? value < best : value > best)))
        {
            _bestMetric = value;
            _bestCheckpoint = path;
        }
        var position = sampler.Position;
        var state = new TrainerState
        {
            GlobalStep = Step,
            TotalSteps = totalSteps,
            Epoch = epoch,
            TokensSeen = TokensSeen,
            Sampler = new SamplerState(position.Epoch, position.BatchIndex, sampler.Seed, sampler.DatasetSize, sampler.BatchSize, sampler.DropLast, sampler.Shuffle),
            BestMetricName = metricName,
            Metric = metric,
            BestMetric = _bestMetric,
            BestModelCheckpoint = _bestCheckpoint,
            LogHistory = [.. _history],
        };
        try
        {
            path = Checkpoints.Write(context.OutputDirectory, Step, folder =>
            {
                saveModel(folder);
                optimizer.Save(folder);
                RunStateFiles.SaveScheduler(folder, schedule, Step);
                RunStateFiles.SaveRng(folder);
                state.Save(folder);
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return RunOutcome.Failed($"Could not save the checkpoint at step {Step} in {context.OutputDirectory}: {e.Message}", LastCheckpoint);
        }
        LastCheckpoint = path;
        _lastSavedStep = Step;
        var reported = new Dictionary<string, double>(StringComparer.Ordinal);
        if (metric is double v) reported[metricName] = v;
        _reporter.Checkpoint(new CheckpointReport(Step, path, reported));
        foreach (var deleted in Checkpoints.ApplyRetention(context.OutputDirectory, _checkpoints.KeepLast, _checkpoints.LowerIsBetter))
            _reporter.Event(RunEvent.Info($"removed {Path.GetFileName(deleted)} (keeping the last {_checkpoints.KeepLast} and the best)", Step));
        return null;
    }

    /// <summary>Ends a cancelled run with a usable checkpoint: <paramref name="save"/> writes one at the step reached unless
    /// one was written there already.</summary>
    public RunOutcome Cancel(long totalSteps, ProgressMeter meter, Func<RunOutcome?> save)
    {
        if (_lastSavedStep != Step)
        {
            meter.Report(Step, "save", force: true);
            var failure = save();
            if (failure is not null) return failure;
        }
        _reporter.Event(RunEvent.Info($"cancelled at step {Step} of {totalSteps}; resume from {Path.GetFileName(LastCheckpoint)}", Step));
        return RunOutcome.Cancelled(LastCheckpoint);
    }

    /// <summary>Restores the run from checkpoint <paramref name="folder"/>: refuses one made for other data (<paramref name="rows"/>
    /// names what the sampler counts), a different batch size or seed; <paramref name="loadModel"/> loads the trainer's own
    /// files (and may return a note for the "resumed" event); then optimizer, sampler position, RNG and this record follow.
    /// Returns a failure outcome naming the problem when the checkpoint cannot be used.</summary>
    public RunOutcome? Resume(string folder, IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer, string rows,
        Func<string, TrainerState, string?> loadModel)
    {
        try
        {
            var checkpoint = Checkpoints.Open(folder);
            var state = checkpoint.State;
            var s = state.Sampler;
            if (s.DatasetSize != sampler.DatasetSize || s.BatchSize != sampler.BatchSize || s.DropLast != sampler.DropLast
                || s.Shuffle != sampler.Shuffle || s.Seed != sampler.Seed)
                throw new CheckpointException($"it was made with {s.DatasetSize} {rows}, batch size {s.BatchSize}, seed {s.Seed}" +
                    $" (drop last {s.DropLast}, shuffle {s.Shuffle}); this run has {sampler.DatasetSize} {rows}, batch size {sampler.BatchSize}," +
                    $" seed {sampler.Seed} (drop last {sampler.DropLast}, shuffle {sampler.Shuffle}). Resume with the same data, batch size and seed");
            var scheduler = RunStateFiles.LoadScheduler(folder);
            if (scheduler.LastStep != state.GlobalStep)
                throw new CheckpointException($"{RunStateFiles.SchedulerFileName} is at step {scheduler.LastStep}, the trainer state at {state.GlobalStep}");

            string? note = loadModel(folder, state);
            optimizer.Load(folder);
            sampler.Restore(new SamplerPosition(s.Epoch, s.BatchIndex));
            RunStateFiles.LoadRng(folder);
            if (scheduler.Kind != schedule.Kind || scheduler.PeakLearningRate != schedule.PeakLearningRate
                || scheduler.TotalSteps != schedule.TotalSteps || scheduler.WarmupSteps != schedule.WarmupSteps)
                _reporter.Event(RunEvent.Warn("schedule-changed",
                    $"the learning-rate schedule differs from the checkpoint's ({scheduler.Kind}, peak {scheduler.PeakLearningRate}, " +
                    $"{scheduler.WarmupSteps} warmup of {scheduler.TotalSteps} steps); continuing with this run's ({schedule.Kind}, peak " +
                    $"{schedule.PeakLearningRate}, {schedule.WarmupSteps} warmup of {schedule.TotalSteps} steps)", state.GlobalStep));

            Step = state.GlobalStep;
            TokensSeen = state.TokensSeen;
            _bestMetric = state.BestMetric;
            _bestCheckpoint = state.BestModelCheckpoint;
            _history.AddRange(state.LogHistory);
            foreach (var entry in state.LogHistory)
                foreach (var (k, v) in entry.Values) _latest[k] = v;
            LastCheckpoint = checkpoint.Path;
            _lastSavedStep = Step;
            _reporter.Event(RunEvent.Info($"resumed from {Path.GetFileName(checkpoint.Path)} at step {Step}{(note is null ? "" : $" ({note})")}", Step));
            return null;
        }
        catch (Exception e) when (e is CheckpointException or ModelLoadException)
        {
            return RunOutcome.Failed($"Cannot resume from {folder}: {e.Message}");
        }
    }
}
