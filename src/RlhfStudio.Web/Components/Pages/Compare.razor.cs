using Microsoft.AspNetCore.Components;
using Microsoft.EntityFrameworkCore;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Web.Components.Charts;
using RlhfStudio.Web.Components.Runs;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Components.Pages;

/// <summary>Compares 2+ runs: overlaid charts (one colour per run, by step or by time since start), the settings that
/// differ, the same prompts' generations side by side, and a head-to-head of two checkpoints. Follows the runs live.</summary>
public partial class Compare
{
    [Inject] private IDbContextFactory<StudioDbContext> DbFactory { get; set; } = null!;
    [Inject] private RunQueries Queries { get; set; } = null!;
    [Inject] private StudioEvents Events { get; set; } = null!;

    /// <summary>Runs to preselect, comma-separated ids.</summary>
    [SupplyParameterFromQuery(Name = "runs")] public string? RunsParam { get; set; }

    private List<RunRecord>? _runs;
    private IReadOnlyCollection<long> _selected = [];
    private Dictionary<long, RunLiveState> _states = [];
    private List<KeyValuePair<string, string[]>> _diff = [];
    private double _smoothing = 0.6;
    private bool _timeAxis, _sharedOnly = true;
    private int _tab;
    private IDisposable? _subscription;
    private DateTime _lastRender;
    private bool _renderPending;

    protected override async Task OnInitializedAsync()
    {
        await using (var db = await DbFactory.CreateDbContextAsync())
            _runs = await db.Runs.AsNoTracking().OrderByDescending(r => r.Id).ToListAsync();
        var ids = (RunsParam ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => long.TryParse(s, out var id) ? id : 0).Where(id => _runs.Any(r => r.Id == id)).ToList();
        // one run given (from its page): pair it with the newest other run of the same method
        if (ids.Count == 1 && _runs.FirstOrDefault(r => r.Id != ids[0] && r.Method == _runs.First(x => x.Id == ids[0]).Method) is { } other) ids.Add(other.Id);
        if (ids.Count >= 1) await OnSelectionChanged(ids);
    }

    protected override void OnAfterRender(bool firstRender)
    {
        if (!firstRender) return;
        _subscription = Events.Subscribe(e => _ = InvokeAsync(() => OnEventAsync(e)));
    }

    private async Task OnEventAsync(StudioEvent e)
    {
        bool changed = false;
        foreach (var state in _states.Values) changed |= state.Apply(e);
        if (!changed) return;
        // metric floods: render at most ~3 times per second
        if (DateTime.UtcNow - _lastRender > TimeSpan.FromMilliseconds(350)) { _lastRender = DateTime.UtcNow; StateHasChanged(); return; }
        if (_renderPending) return;
        _renderPending = true;
        await Task.Delay(350);
        _renderPending = false;
        _lastRender = DateTime.UtcNow;
        StateHasChanged();
    }

    private async Task OnSelectionChanged(IEnumerable<long> ids)
    {
        _selected = ids.ToList();
        foreach (var id in _selected.Where(id => !_states.ContainsKey(id)))
        {
            var state = new RunLiveState(id);
            if (await Queries.HistoryAsync(id, maxPointsPerSeries: 1000) is { } history) state.Load(history);
            _states[id] = state;
        }
        var specs = _selected.Select(id => SpecFlattener.Flatten(_runs!.First(r => r.Id == id).SpecJson)).ToList();
        _diff = SpecFlattener.Differences(specs);
    }

    private static string RunColor(int i) => MetricGroups.Palette[i % MetricGroups.Palette.Length];

    private string RunName(long id) => _runs?.FirstOrDefault(r => r.Id == id)?.Name ?? "";

    private IReadOnlyList<string> ChartNames
    {
        get
        {
            var sets = _selected.Where(_states.ContainsKey).Select(id => _states[id].MetricNames).ToList();
            if (sets.Count == 0) return [];
            IEnumerable<string> names = _sharedOnly
                ? sets.Skip(1).Aggregate((IEnumerable<string>)sets[0], (acc, s) => acc.Intersect(s))
                : sets.SelectMany(s => s).Distinct();
            return MetricGroups.Sort(names).ToList();
        }
    }

    private IReadOnlyList<ChartSeries> SeriesFor(string name) => _selected.Select((id, i) =>
    {
        var points = _states.TryGetValue(id, out var s) ? s.Series(name) : [];
        if (points.Count == 0) return new ChartSeries($"#{id}", RunColor(i), []);
        long t0 = _runs!.First(r => r.Id == id).StartedAt?.ToUnixTimeMilliseconds() ?? points.Min(p => p.TimeMs);
        var xy = _timeAxis
            ? points.Select(p => ((p.TimeMs - t0) / 1000.0, p.Value)).OrderBy(p => p.Item1).ToList()
            : points.Select(p => ((double)p.Step, p.Value)).ToList();
        return new ChartSeries($"#{id}", RunColor(i), xy);
    }).ToList();

    public void Dispose() => _subscription?.Dispose();
}
