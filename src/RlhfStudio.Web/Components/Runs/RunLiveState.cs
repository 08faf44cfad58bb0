using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Components.Runs;

/// <summary>What a page knows about one run: the history it loaded plus everything streamed since,
/// merged without duplicates (metrics by name+step, samples by table+step+index, checkpoints by step,
/// events by id). Live items that overlap the history simply replace their stored twin.</summary>
public sealed class RunLiveState
{
    private readonly Dictionary<string, SortedDictionary<long, MetricPointDto>> _metrics = new(StringComparer.Ordinal);
    private readonly SortedDictionary<(long Step, string Table, int Index), SampleDto> _samples = new();
    private readonly SortedDictionary<long, CheckpointDto> _checkpoints = new();
    private readonly SortedDictionary<long, RunEventDto> _events = new();

    public long RunId { get; }
    public string Status { get; set; } = "";
    public ProgressDto? Progress { get; private set; }

    public RunLiveState(long runId) => RunId = runId;

    public IReadOnlyCollection<string> MetricNames => _metrics.Keys;
    public IReadOnlyList<MetricPointDto> Series(string name) => _metrics.TryGetValue(name, out var s) ? [.. s.Values] : [];
    public IReadOnlyList<SampleDto> Samples => [.. _samples.Values];
    public IReadOnlyList<CheckpointDto> Checkpoints => [.. _checkpoints.Values];
    public IReadOnlyList<RunEventDto> Events => [.. _events.Values];
    public IEnumerable<RunEventDto> Warnings => _events.Values.Where(e => e.Level == "Warning" && e.Code is not null);
    public int PointCount => _metrics.Values.Sum(s => s.Count);

    public void Load(RunHistory history)
    {
        Status = history.Status;
        if (history.Progress is not null) Progress = history.Progress;
        foreach (var (_, points) in history.Metrics) AddMetrics(points);
        AddSamples(history.Samples);
        foreach (var c in history.Checkpoints) _checkpoints[c.Step] = c;
        AddEvents(history.Events);
    }

    public void AddMetrics(IEnumerable<MetricPointDto> points)
    {
        foreach (var p in points)
        {
            if (!_metrics.TryGetValue(p.Name, out var series)) _metrics[p.Name] = series = new SortedDictionary<long, MetricPointDto>();
            series[p.Step] = p;
        }
    }

    public void AddSamples(IEnumerable<SampleDto> samples)
    {
        foreach (var s in samples) _samples[(s.Step, s.Table, s.Index)] = s;
    }

    public void AddCheckpoint(CheckpointDto c) => _checkpoints[c.Step] = c;

    public void AddEvents(IEnumerable<RunEventDto> events)
    {
        foreach (var e in events) _events[e.Id] = e;
    }

    public void SetProgress(ProgressDto progress) => Progress = progress;

    /// <summary>Applies a studio event if it concerns this run; returns whether anything changed.</summary>
    public bool Apply(StudioEvent e)
    {
        switch (e)
        {
            case RunMetricsAppended m when m.RunId == RunId: AddMetrics(m.Points); return true;
            case RunSamplesAppended s when s.RunId == RunId: AddSamples(s.Samples); return true;
            case RunCheckpointAdded c when c.RunId == RunId: AddCheckpoint(c.Checkpoint); return true;
            case RunProgressChanged p when p.RunId == RunId: SetProgress(p.Progress); return true;
            case RunEventsAppended ev when ev.RunId == RunId: AddEvents(ev.Events); return true;
            case RunListChanged l when l.RunId == RunId: Status = l.Status; return true;
            default: return false;
        }
    }
}
