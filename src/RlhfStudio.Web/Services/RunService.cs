using System.Collections.Concurrent;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Services;

/// <summary>Runs queued runs on the engine, off the request threads: at most
/// <see cref="StudioOptions.MaxConcurrentRuns"/> at once, each job on a dedicated thread. Cancel, pause and
/// resume; pipelines (a run waits for the run it depends on and takes its output); and restart safety: a
/// run found "Running" at start-up was interrupted by a crash and is resumed from its newest complete
/// checkpoint (or restarted, or marked interrupted, as configured).</summary>
public sealed class RunService(
    IDbContextFactory<StudioDbContext> dbFactory,
    RecordWriter writer,
    RunJournal journal,
    StudioEvents events,
    JobFactory jobs,
    IOptions<StudioOptions> options,
    ILogger<RunService> logger) : BackgroundService
{
    private enum StopIntent { None, Cancel, Pause, Shutdown }

    private sealed class ActiveRun(long id)
    {
        public long Id { get; } = id;
        public CancellationTokenSource Cancellation { get; } = new();
        public volatile StopIntent Intent;
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly ConcurrentDictionary<long, ActiveRun> _active = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly SemaphoreSlim _schedule = new(1, 1);
    private StudioOptions Options => options.Value;

    /// <summary>Ids of the runs executing now.</summary>
    public IReadOnlyCollection<long> ActiveRunIds => _active.Keys.ToList();

    /// <summary>Asks the scheduler to look at the queue now.</summary>
    public void Wake() => _wake.Release();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await RecoverAsync(stoppingToken);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await StartQueuedAsync(stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                logger.LogError(ex, "Scheduling queued runs failed");
            }
            try { await _wake.WaitAsync(TimeSpan.FromSeconds(2), stoppingToken); }
            catch (OperationCanceledException) { break; }
        }
    }

    /// <summary>Stopping the studio: every running job saves a checkpoint and is queued to resume at the next start.</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        foreach (var run in _active.Values)
        {
            run.Intent = StopIntent.Shutdown;
            run.Cancellation.Cancel();
        }
        await Task.WhenAny(Task.WhenAll(_active.Values.Select(r => r.Done.Task)), Task.Delay(Timeout.Infinite, cancellationToken));
        await base.StopAsync(cancellationToken);
    }

    // ---- recovery -------------------------------------------------------------------------------

    private async Task RecoverAsync(CancellationToken cancel)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        var interrupted = await db.Runs.Where(r => r.Status == RunStatus.Running).ToListAsync(cancel);
        if (interrupted.Count == 0) return;
        double front = (await db.Runs.Where(r => r.Status == RunStatus.Queued).MinAsync(r => (double?)r.QueuePosition, cancel) ?? 1) - 1;
        foreach (var run in interrupted.OrderByDescending(r => r.Id))
        {
            var checkpoint = await LatestCheckpointAsync(db, run.Id, cancel);
            string message;
            if (checkpoint is not null)
            {
                run.Status = RunStatus.Queued;
                run.ResumeFrom = checkpoint.Path;
                run.QueuePosition = front--;
                message = $"The studio stopped while this run was running; it resumes from the checkpoint of step {checkpoint.Step}.";
            }
            else if (Options.RestartInterruptedRuns)
            {
                run.Status = RunStatus.Queued;
                run.ResumeFrom = null;
                run.QueuePosition = front--;
                message = "The studio stopped while this run was running and it had no checkpoint yet; it starts again from the beginning.";
            }
            else
            {
                run.Status = RunStatus.Interrupted;
                run.EndedAt = DateTimeOffset.UtcNow;
                message = "The studio stopped while this run was running and it had no checkpoint; it is marked interrupted.";
            }
            db.RunEvents.Add(new RunEventRecord { RunId = run.Id, Time = DateTimeOffset.UtcNow, Level = "Warning", Code = "restart", Message = message });
            logger.LogWarning("Run {RunId}: {Message}", run.Id, message);
        }
        await db.SaveChangesAsync(cancel);
        foreach (var run in interrupted) events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
    }

    /// <summary>The newest recorded checkpoint whose folder is complete on disk.</summary>
    private static async Task<CheckpointRecord?> LatestCheckpointAsync(StudioDbContext db, long runId, CancellationToken cancel)
    {
        var checkpoints = await db.Checkpoints.AsNoTracking().Where(c => c.RunId == runId).OrderByDescending(c => c.Step).ToListAsync(cancel);
        return checkpoints.FirstOrDefault(c => CheckpointFolder.IsComplete(c.Path));
    }

    // ---- scheduling -----------------------------------------------------------------------------

    private async Task StartQueuedAsync(CancellationToken cancel)
    {
        await _schedule.WaitAsync(cancel);
        try
        {
            while (_active.Count < Math.Max(1, Options.MaxConcurrentRuns))
            {
                await using var db = await dbFactory.CreateDbContextAsync(cancel);
                var queued = await db.Runs.Where(r => r.Status == RunStatus.Queued)
                    .OrderBy(r => r.QueuePosition).ThenBy(r => r.Id).ToListAsync(cancel);
                RunRecord? next = null;
                foreach (var run in queued)
                {
                    if (run.DependsOnRunId is not long dep) { next = run; break; }
                    var upstream = await db.Runs.AsNoTracking().FirstOrDefaultAsync(r => r.Id == dep, cancel);
                    if (upstream is null || upstream.Status is RunStatus.Failed or RunStatus.Cancelled or RunStatus.Interrupted)
                    {
                        run.Status = RunStatus.Cancelled;
                        run.EndedAt = DateTimeOffset.UtcNow;
                        run.Error = upstream is null ? $"run #{dep} it depends on was deleted" : $"run #{dep} it depends on ended {upstream.Status.ToString().ToLowerInvariant()}";
                        await db.SaveChangesAsync(cancel);
                        events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
                        continue;
                    }
                    if (upstream.Status == RunStatus.Completed) { next = run; break; }
                    // upstream still queued/running/paused: wait, but let independent runs behind it go first
                }
                if (next is null) return;
                await StartAsync(db, next, cancel);
            }
        }
        finally
        {
            _schedule.Release();
        }
    }

    private async Task StartAsync(StudioDbContext db, RunRecord run, CancellationToken cancel)
    {
        RunSpec spec;
        ITrainingJob job;
        try
        {
            spec = await ResolveReferencesAsync(db, RunSpec.FromJson(run.SpecJson), cancel);
            job = jobs.Create(spec);
        }
        catch (Exception ex) when (ex is RunSpecException or NotSupportedException or InvalidOperationException)
        {
            run.Status = RunStatus.Failed;
            run.Error = ex.Message;
            run.EndedAt = DateTimeOffset.UtcNow;
            await db.SaveChangesAsync(cancel);
            events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
            return;
        }

        var output = Path.Combine(Options.RunsPath, run.Id.ToString());
        Directory.CreateDirectory(output);
        await File.WriteAllTextAsync(Path.Combine(output, "run_spec.json"), run.SpecJson, cancel);

        string? resumeFrom = run.ResumeFrom is not null && CheckpointFolder.IsComplete(run.ResumeFrom) ? run.ResumeFrom : null;
        run.Status = RunStatus.Running;
        run.StartedAt ??= DateTimeOffset.UtcNow;
        run.EndedAt = null;
        run.Error = null;
        run.OutputDir = output;
        run.Attempts++;
        await db.SaveChangesAsync(cancel);
        events.Publish(new RunListChanged(run.Id, run.Status.ToString()));

        var active = new ActiveRun(run.Id);
        _active[run.Id] = active;
        var reporter = new RunRecorder(run.Id, writer);
        reporter.Event(RunEvent.Info(resumeFrom is null ? $"Started {run.Method} run (attempt {run.Attempts})." : $"Resuming from {resumeFrom}."));
        var context = new RunContext(spec, output, reporter, active.Cancellation.Token, resumeFrom);
        var thread = new Thread(() => Execute(active, job, context)) { IsBackground = true, Name = $"run-{run.Id}" };
        thread.Start();
    }

    private void Execute(ActiveRun active, ITrainingJob job, RunContext context)
    {
        RunOutcome outcome;
        try
        {
            outcome = job.Run(context);
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Run {RunId} failed with an unexpected error", active.Id);
            outcome = RunOutcome.Failed($"unexpected error: {ex.Message}");
        }
        finally
        {
            GC.Collect(); // release native tensors held only by finalizable wrappers
        }
        _ = FinishAsync(active, outcome);
    }

    private async Task FinishAsync(ActiveRun active, RunOutcome outcome)
    {
        try
        {
            if (outcome.State == RunEndState.Failed && outcome.Message is not null)
                writer.Event(active.Id, new RunEvent(RunEventLevel.Error, outcome.Message));
            await writer.FlushAsync(); // every report is stored before the status says the run ended
            await using var db = await dbFactory.CreateDbContextAsync();
            var run = await db.Runs.FirstOrDefaultAsync(r => r.Id == active.Id);
            if (run is not null)
            {
                var checkpoint = outcome.LastCheckpoint ?? (await LatestCheckpointAsync(db, run.Id, CancellationToken.None))?.Path;
                run.EndedAt = DateTimeOffset.UtcNow;
                run.ResumeFrom = checkpoint;
                switch (outcome.State)
                {
                    case RunEndState.Completed:
                        run.Status = RunStatus.Completed;
                        run.FinalModelPath = outcome.FinalModel;
                        run.ResumeFrom = null;
                        break;
                    case RunEndState.Cancelled when active.Intent == StopIntent.Pause:
                        run.Status = RunStatus.Paused;
                        break;
                    case RunEndState.Cancelled when active.Intent == StopIntent.Shutdown:
                        run.Status = RunStatus.Queued; // resumes at the next start
                        run.EndedAt = null;
                        run.QueuePosition = (await db.Runs.Where(r => r.Status == RunStatus.Queued).MinAsync(r => (double?)r.QueuePosition) ?? 1) - 1;
                        break;
                    case RunEndState.Cancelled:
                        run.Status = RunStatus.Cancelled;
                        break;
                    default:
                        run.Status = RunStatus.Failed;
                        run.Error = outcome.Message ?? "failed";
                        break;
                }
                await db.SaveChangesAsync();
                events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
            }
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Recording the end of run {RunId} failed", active.Id);
        }
        finally
        {
            _active.TryRemove(active.Id, out _);
            active.Done.TrySetResult();
            Wake();
        }
    }

    /// <summary>Replaces references to earlier runs by the folders of their outputs.</summary>
    private static async Task<RunSpec> ResolveReferencesAsync(StudioDbContext db, RunSpec spec, CancellationToken cancel)
    {
        async Task<string> OutputOf(long runId, string field)
        {
            var run = await db.Runs.AsNoTracking().FirstOrDefaultAsync(r => r.Id == runId, cancel)
                ?? throw new InvalidOperationException($"{field}: run #{runId} does not exist");
            if (run.Status != RunStatus.Completed || run.FinalModelPath is null)
                throw new InvalidOperationException($"{field}: run #{runId} has no final model (it is {run.Status.ToString().ToLowerInvariant()})");
            return run.FinalModelPath;
        }
        async Task<ModelRef?> Resolve(ModelRef? m, string field) =>
            m?.RunId is long id ? ModelRef.FromPath(await OutputOf(id, field)) : m;

        spec = spec with { Model = (await Resolve(spec.Model, "model"))! };
        switch (spec)
        {
            case PpoSpec ppo:
                spec = ppo with
                {
                    Reference = await Resolve(ppo.Reference, "reference"),
                    ValueModel = await Resolve(ppo.ValueModel, "valueModel"),
                    Reward = ppo.Reward.RunId is long r ? new RewardSource { ModelPath = await OutputOf(r, "reward") } : ppo.Reward,
                };
                break;
            case RlooSpec rloo:
                spec = rloo with
                {
                    Reference = await Resolve(rloo.Reference, "reference"),
                    Reward = rloo.Reward.RunId is long r2 ? new RewardSource { ModelPath = await OutputOf(r2, "reward") } : rloo.Reward,
                };
                break;
            case DpoSpec dpo:
                spec = dpo with { Reference = await Resolve(dpo.Reference, "reference") };
                break;
        }
        return spec;
    }

    // ---- operations -----------------------------------------------------------------------------

    /// <summary>Cancels a queued run, or stops a running one after its current step (it saves a checkpoint).</summary>
    public async Task<bool> CancelAsync(long runId)
    {
        if (_active.TryGetValue(runId, out var active))
        {
            active.Intent = StopIntent.Cancel;
            active.Cancellation.Cancel();
            return true;
        }
        return await SetStatusAsync(runId, r => r.Status is RunStatus.Queued or RunStatus.Paused, r =>
        {
            r.Status = RunStatus.Cancelled;
            r.EndedAt = DateTimeOffset.UtcNow;
        });
    }

    /// <summary>Stops a running run after its current step, keeping a checkpoint to resume from.</summary>
    public bool Pause(long runId)
    {
        if (!_active.TryGetValue(runId, out var active)) return false;
        active.Intent = StopIntent.Pause;
        active.Cancellation.Cancel();
        return true;
    }

    /// <summary>Queues a paused, cancelled, failed or interrupted run again; it continues from its newest checkpoint.</summary>
    public async Task<bool> ResumeAsync(long runId)
    {
        await using var db = await dbFactory.CreateDbContextAsync();
        var run = await db.Runs.FirstOrDefaultAsync(r => r.Id == runId);
        if (run is null || run.Status is not (RunStatus.Paused or RunStatus.Cancelled or RunStatus.Failed or RunStatus.Interrupted)) return false;
        var checkpoint = await LatestCheckpointAsync(db, runId, CancellationToken.None);
        run.ResumeFrom = run.ResumeFrom is not null && CheckpointFolder.IsComplete(run.ResumeFrom) ? run.ResumeFrom : checkpoint?.Path;
        run.Status = RunStatus.Queued;
        run.QueuePosition = (await db.Runs.Where(r => r.Status == RunStatus.Queued).MaxAsync(r => (double?)r.QueuePosition) ?? 0) + 1;
        run.Error = null;
        await db.SaveChangesAsync();
        events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
        Wake();
        return true;
    }

    /// <summary>Moves a queued run to a position in the queue (0 = next to start).</summary>
    public async Task<bool> MoveAsync(long runId, int position)
    {
        await using var db = await dbFactory.CreateDbContextAsync();
        var queued = await db.Runs.Where(r => r.Status == RunStatus.Queued).OrderBy(r => r.QueuePosition).ThenBy(r => r.Id).ToListAsync();
        var run = queued.FirstOrDefault(r => r.Id == runId);
        if (run is null) return false;
        queued.Remove(run);
        queued.Insert(Math.Clamp(position, 0, queued.Count), run);
        for (int i = 0; i < queued.Count; i++) queued[i].QueuePosition = i + 1;
        await db.SaveChangesAsync();
        events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
        return true;
    }

    /// <summary>Deletes a run and all its records (stopping it first); with <paramref name="deleteFiles"/> also its folder.</summary>
    public async Task<bool> DeleteAsync(long runId, bool deleteFiles)
    {
        if (_active.TryGetValue(runId, out var active))
        {
            active.Intent = StopIntent.Cancel;
            active.Cancellation.Cancel();
            await active.Done.Task.WaitAsync(TimeSpan.FromMinutes(5));
        }
        await using var db = await dbFactory.CreateDbContextAsync();
        var run = await db.Runs.FirstOrDefaultAsync(r => r.Id == runId);
        if (run is null) return false;
        db.Runs.Remove(run);
        await db.SaveChangesAsync();
        journal.Forget(runId);
        if (deleteFiles && run.OutputDir is not null && Directory.Exists(run.OutputDir)
            && Path.GetFullPath(run.OutputDir).StartsWith(Path.GetFullPath(Options.RunsPath) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            Directory.Delete(run.OutputDir, recursive: true);
        events.Publish(new RunListChanged(runId, "Deleted"));
        return true;
    }

    /// <summary>Completes when the run is no longer executing.</summary>
    public Task WaitForStopAsync(long runId) => _active.TryGetValue(runId, out var a) ? a.Done.Task : Task.CompletedTask;

    private async Task<bool> SetStatusAsync(long runId, Func<RunRecord, bool> allowed, Action<RunRecord> change)
    {
        await using var db = await dbFactory.CreateDbContextAsync();
        var run = await db.Runs.FirstOrDefaultAsync(r => r.Id == runId);
        if (run is null || !allowed(run)) return false;
        change(run);
        await db.SaveChangesAsync();
        events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
        return true;
    }
}
