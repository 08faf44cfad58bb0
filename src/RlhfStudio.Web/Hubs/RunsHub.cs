using Microsoft.AspNetCore.SignalR;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Hubs;

/// <summary>The studio's live channel at <c>/hubs/runs</c>. Clients join the group of a run they watch
/// (<see cref="WatchRun"/>) or the "system" group (machine benchmark); run-list changes go to everyone.
/// Client-side method names are the constants of <see cref="HubEvents"/>.</summary>
public sealed class RunsHub(RunQueries queries) : Hub
{
    public const string Path = "/hubs/runs";
    public const string SystemGroup = "system";

    public static string RunGroup(long runId) => $"run-{runId}";

    /// <summary>Joins the run's group, then returns everything recorded so far. Records are published
    /// only after they are committed, so whatever this client did not receive live is in the history it
    /// reads after joining: no gap. Items in both are de-duplicated by the client (see RunStreamDtos).</summary>
    public async Task<RunHistory?> WatchRun(long runId, int maxPointsPerSeries = RunQueries.DefaultMaxPoints)
    {
        await Groups.AddToGroupAsync(Context.ConnectionId, RunGroup(runId));
        return await queries.HistoryAsync(runId, Math.Clamp(maxPointsPerSeries, 4, 100_000), Context.ConnectionAborted);
    }

    public Task UnwatchRun(long runId) => Groups.RemoveFromGroupAsync(Context.ConnectionId, RunGroup(runId));

    public Task WatchSystem() => Groups.AddToGroupAsync(Context.ConnectionId, SystemGroup);
}

/// <summary>Names of the methods the hub calls on clients.</summary>
public static class HubEvents
{
    public const string RunListChanged = "RunListChanged";
    public const string Metrics = "Metrics";
    public const string Samples = "Samples";
    public const string Checkpoint = "Checkpoint";
    public const string Progress = "Progress";
    public const string Events = "Events";
    public const string BenchmarkProgress = "BenchmarkProgress";
    public const string BenchmarkCompleted = "BenchmarkCompleted";
    public const string BenchmarkFailed = "BenchmarkFailed";
}
