using System.Text.Json;
using System.Threading.Channels;
using RlhfStudio.Data;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Services;

/// <summary>The single writer of run records. Reports from running jobs queue up in a bounded channel;
/// this service drains it in batches (a transaction every ~250 ms, or sooner when thousands are waiting),
/// and only after a batch is committed publishes it to the hub and the pages. Publishing after the commit
/// is what lets a late client read history and then follow the stream without a gap: any point it did
/// not get live was already in the database when it read the history.</summary>
public sealed class RecordWriter(RunJournal journal, StudioEvents events, ILogger<RecordWriter> logger) : BackgroundService
{
    public static readonly TimeSpan BatchWindow = TimeSpan.FromMilliseconds(250);
    private const int MaxBatch = 20_000;

    private readonly Channel<object> _queue = Channel.CreateBounded<object>(new BoundedChannelOptions(200_000)
    {
        SingleReader = true,
        FullMode = BoundedChannelFullMode.Wait,
    });

    private sealed record MetricsItem(long RunId, long Step, IReadOnlyDictionary<string, double> Values, long TimeMs);
    private sealed record SamplesItem(long RunId, long Step, IReadOnlyList<SampleRow> Rows, long TimeMs);
    private sealed record CheckpointItem(long RunId, CheckpointReport Checkpoint, long TimeMs);
    private sealed record ProgressItem(long RunId, RunProgress Progress);
    private sealed record EventItem(long RunId, RunEvent Event, long TimeMs);
    private sealed record FlushItem(TaskCompletionSource Done);

    public void Metrics(long runId, long step, IReadOnlyDictionary<string, double> values) => Enqueue(new MetricsItem(runId, step, values, Now()));
    public void Samples(long runId, long step, IReadOnlyList<SampleRow> rows) => Enqueue(new SamplesItem(runId, step, rows, Now()));
    public void Checkpoint(long runId, CheckpointReport checkpoint) => Enqueue(new CheckpointItem(runId, checkpoint, Now()));
    public void Progress(long runId, RunProgress progress) => Enqueue(new ProgressItem(runId, progress));
    public void Event(long runId, RunEvent runEvent) => Enqueue(new EventItem(runId, runEvent, Now()));

    /// <summary>Completes when everything queued before the call is committed and published.</summary>
    public Task FlushAsync()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(new FlushItem(done));
        return done.Task;
    }

    private static long Now() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private void Enqueue(object item)
    {
        // Called from the job's thread: when the writer falls far behind, the job waits (back-pressure)
        // rather than the studio running out of memory.
        if (!_queue.Writer.TryWrite(item)) _queue.Writer.WriteAsync(item).AsTask().GetAwaiter().GetResult();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var reader = _queue.Reader;
        var pending = new List<object>();
        while (true)
        {
            try
            {
                if (!await reader.WaitToReadAsync(stoppingToken)) break;
            }
            catch (OperationCanceledException)
            {
                break;
            }
            // Gather for one batch window (or until the batch is large), then write.
            var windowEnd = DateTime.UtcNow + BatchWindow;
            while (pending.Count < MaxBatch)
            {
                while (pending.Count < MaxBatch && reader.TryRead(out var item))
                {
                    pending.Add(item);
                    if (item is FlushItem) windowEnd = DateTime.UtcNow; // someone waits: write now
                }
                var left = windowEnd - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) break;
                try
                {
                    using var wait = new CancellationTokenSource(left);
                    if (!await reader.WaitToReadAsync(wait.Token)) break;
                }
                catch (OperationCanceledException) { break; }
            }
            await WriteAsync(pending);
            pending.Clear();
        }
        // Shutting down: write what is left so nothing reported is lost.
        while (reader.TryRead(out var item)) pending.Add(item);
        if (pending.Count > 0) await WriteAsync(pending);
    }

    private async Task WriteAsync(List<object> items)
    {
        var batch = new RecordBatch();
        var metricPublish = new Dictionary<long, List<MetricPointDto>>();
        var samplePublish = new Dictionary<long, List<SampleDto>>();
        var checkpointPublish = new List<(long RunId, CheckpointDto Dto)>();
        var progressPublish = new Dictionary<long, ProgressDto>();
        var eventRuns = new List<EventItem>();
        var flushes = new List<FlushItem>();

        foreach (var item in items)
        {
            switch (item)
            {
                case MetricsItem m:
                    var list = Get(metricPublish, m.RunId);
                    foreach (var (name, value) in m.Values)
                    {
                        batch.Metrics.Add(new MetricInput(m.RunId, name, m.Step, value, m.TimeMs));
                        if (double.IsFinite(value)) list.Add(new MetricPointDto(name, m.Step, value, m.TimeMs));
                    }
                    break;
                case SamplesItem s:
                    foreach (var row in s.Rows)
                    {
                        var extra = row.Extra is null ? null : JsonSerializer.Serialize(row.Extra);
                        batch.Samples.Add(new SampleInput(s.RunId, s.Step, row.Table, row.Index, row.Prompt, row.Completion,
                            row.Score, row.Reference, row.ReferenceScore, extra, s.TimeMs));
                        Get(samplePublish, s.RunId).Add(new SampleDto(s.Step, row.Table, row.Index, row.Prompt, row.Completion,
                            row.Score, row.Reference, row.ReferenceScore, extra, s.TimeMs));
                    }
                    break;
                case CheckpointItem c:
                    var metrics = c.Checkpoint.Metrics.Where(kv => double.IsFinite(kv.Value)).ToDictionary();
                    batch.Checkpoints.Add(new CheckpointInput(c.RunId, c.Checkpoint.Step, c.Checkpoint.Path, JsonSerializer.Serialize(metrics), c.TimeMs));
                    checkpointPublish.Add((c.RunId, new CheckpointDto(c.Checkpoint.Step, c.Checkpoint.Path, metrics, c.TimeMs)));
                    break;
                case ProgressItem p:
                    batch.Progress[p.RunId] = new ProgressInput(p.RunId, p.Progress.Step, p.Progress.TotalSteps, p.Progress.Eta?.TotalSeconds);
                    progressPublish[p.RunId] = new ProgressDto(p.Progress.Step, p.Progress.TotalSteps, p.Progress.Elapsed.TotalSeconds,
                        p.Progress.Eta?.TotalSeconds, p.Progress.Phase);
                    break;
                case EventItem e:
                    batch.Events.Add(new EventInput(e.RunId, e.TimeMs, e.Event.Step, e.Event.Level.ToString(), e.Event.Code, e.Event.Message));
                    eventRuns.Add(e);
                    break;
                case FlushItem f:
                    flushes.Add(f);
                    break;
            }
        }

        IReadOnlyList<long> eventIds = [];
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                eventIds = await journal.WriteAsync(batch);
                break;
            }
            catch (Exception ex) when (attempt < 5)
            {
                // A locked file (another process reading) or a full disk: wait and retry, never drop silently.
                logger.LogWarning(ex, "Writing {Count} run records failed (attempt {Attempt}); retrying", batch.Count, attempt);
                await Task.Delay(200 * attempt);
            }
            catch (Exception ex)
            {
                logger.LogError(ex, "Could not write {Count} run records; they are lost", batch.Count);
                foreach (var f in flushes) f.Done.TrySetResult();
                return;
            }
        }

        foreach (var (runId, points) in metricPublish) if (points.Count > 0) events.Publish(new RunMetricsAppended(runId, points));
        foreach (var (runId, samples) in samplePublish) events.Publish(new RunSamplesAppended(runId, samples));
        foreach (var (runId, dto) in checkpointPublish) events.Publish(new RunCheckpointAdded(runId, dto));
        foreach (var (runId, dto) in progressPublish) events.Publish(new RunProgressChanged(runId, dto));
        foreach (var group in eventRuns.Select((e, i) => (e, id: eventIds[i])).GroupBy(x => x.e.RunId))
            events.Publish(new RunEventsAppended(group.Key, group.Select(x => new RunEventDto(x.id, x.e.TimeMs, x.e.Event.Step,
                x.e.Event.Level.ToString(), x.e.Event.Code, x.e.Event.Message)).ToList()));
        foreach (var f in flushes) f.Done.TrySetResult();
    }

    private static List<T> Get<T>(Dictionary<long, List<T>> map, long key)
    {
        if (!map.TryGetValue(key, out var list)) map[key] = list = [];
        return list;
    }
}

/// <summary>The reporter a job of one run talks to: forwards everything to the record writer.</summary>
public sealed class RunRecorder(long runId, RecordWriter writer) : IRunReporter
{
    public long RunId => runId;
    public void Metrics(long step, IReadOnlyDictionary<string, double> values) => writer.Metrics(runId, step, values);
    public void Samples(long step, IReadOnlyList<SampleRow> rows) => writer.Samples(runId, step, rows);
    public void Checkpoint(CheckpointReport checkpoint) => writer.Checkpoint(runId, checkpoint);
    public void Progress(RunProgress progress) => writer.Progress(runId, progress);
    public void Event(RunEvent runEvent) => writer.Event(runId, runEvent);
}
