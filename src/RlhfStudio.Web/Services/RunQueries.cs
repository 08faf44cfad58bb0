using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;

namespace RlhfStudio.Web.Services;

/// <summary>Read side of a run's records: metric series (downsampled, keeping extremes), samples,
/// checkpoints, events, and the history a watching client starts from.</summary>
public sealed class RunQueries(IDbContextFactory<StudioDbContext> dbFactory, MetricStore metrics)
{
    public const int DefaultMaxPoints = 2000;

    public async Task<RunRecord?> GetRunAsync(long runId, CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        return await db.Runs.AsNoTracking().FirstOrDefaultAsync(r => r.Id == runId, cancel);
    }

    public Task<IReadOnlyList<string>> MetricNamesAsync(long runId, CancellationToken cancel = default) => metrics.SeriesNamesAsync(runId, cancel);

    /// <summary>Series by name; all of the run's series when <paramref name="names"/> is empty.</summary>
    public async Task<Dictionary<string, IReadOnlyList<MetricPointDto>>> MetricsAsync(long runId, IReadOnlyCollection<string>? names,
        long from = long.MinValue, long to = long.MaxValue, int maxPoints = DefaultMaxPoints, CancellationToken cancel = default)
    {
        var wanted = names is { Count: > 0 } ? names : await metrics.SeriesNamesAsync(runId, cancel);
        var result = new Dictionary<string, IReadOnlyList<MetricPointDto>>();
        foreach (var name in wanted)
        {
            var points = await metrics.ReadDownsampledAsync(runId, name, from, to, maxPoints, cancel);
            result[name] = points.Select(p => new MetricPointDto(name, p.Step, p.Value, p.TimeMs)).ToList();
        }
        return result;
    }

    public async Task<List<SampleDto>> SamplesAsync(long runId, long? step = null, string? table = null, CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        var query = db.Samples.AsNoTracking().Where(s => s.RunId == runId);
        if (step is long st) query = query.Where(s => s.Step == st);
        if (table is not null) query = query.Where(s => s.Table == table);
        var rows = await query.OrderBy(s => s.Step).ThenBy(s => s.Table).ThenBy(s => s.Index).ToListAsync(cancel);
        return rows.Select(ToDto).ToList();
    }

    public async Task<List<CheckpointDto>> CheckpointsAsync(long runId, CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        var rows = await db.Checkpoints.AsNoTracking().Where(c => c.RunId == runId).OrderBy(c => c.Step).ToListAsync(cancel);
        return rows.Select(c => new CheckpointDto(c.Step, c.Path,
            JsonSerializer.Deserialize<Dictionary<string, double>>(c.MetricsJson) ?? [], c.CreatedAt.ToUnixTimeMilliseconds())).ToList();
    }

    public async Task<List<RunEventDto>> EventsAsync(long runId, int take = 500, CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        var rows = await db.RunEvents.AsNoTracking().Where(e => e.RunId == runId).OrderByDescending(e => e.Id).Take(take).ToListAsync(cancel);
        rows.Reverse();
        return rows.Select(e => new RunEventDto(e.Id, e.Time.ToUnixTimeMilliseconds(), e.Step, e.Level, e.Code, e.Message)).ToList();
    }

    /// <summary>Everything recorded so far, for a client that starts watching the run.</summary>
    public async Task<RunHistory?> HistoryAsync(long runId, int maxPointsPerSeries = DefaultMaxPoints, CancellationToken cancel = default)
    {
        var run = await GetRunAsync(runId, cancel);
        if (run is null) return null;
        var series = await MetricsAsync(runId, null, maxPoints: maxPointsPerSeries, cancel: cancel);
        var progress = run.TotalSteps > 0 ? new ProgressDto(run.Step, run.TotalSteps,
            ((run.EndedAt ?? DateTimeOffset.UtcNow) - (run.StartedAt ?? DateTimeOffset.UtcNow)).TotalSeconds, run.EtaSeconds, "") : null;
        return new RunHistory(runId, run.Status.ToString(), progress, series,
            await SamplesAsync(runId, cancel: cancel), await CheckpointsAsync(runId, cancel), await EventsAsync(runId, cancel: cancel));
    }

    private static SampleDto ToDto(SampleRecord s) => new(s.Step, s.Table, s.Index, s.Prompt, s.Completion, s.Score, s.Reference,
        s.ReferenceScore, s.ExtraJson, s.CreatedAt.ToUnixTimeMilliseconds());
}
