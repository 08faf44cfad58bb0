using System.Threading.Channels;
using Microsoft.AspNetCore.SignalR;
using RlhfStudio.Web.Hubs;

namespace RlhfStudio.Web.Services;

/// <summary>Something that happened in the studio that pages and hub clients may want to see.</summary>
public abstract record StudioEvent;

/// <summary>A run was created, changed status or was deleted.</summary>
public sealed record RunListChanged(long RunId, string Status) : StudioEvent;

/// <summary>Metric points of a run were recorded (published after they are committed to the database).</summary>
public sealed record RunMetricsAppended(long RunId, IReadOnlyList<MetricPointDto> Points) : StudioEvent;

/// <summary>Sample rows of a run were recorded.</summary>
public sealed record RunSamplesAppended(long RunId, IReadOnlyList<SampleDto> Samples) : StudioEvent;

/// <summary>A checkpoint of a run was recorded.</summary>
public sealed record RunCheckpointAdded(long RunId, CheckpointDto Checkpoint) : StudioEvent;

/// <summary>A run's progress moved.</summary>
public sealed record RunProgressChanged(long RunId, ProgressDto Progress) : StudioEvent;

/// <summary>Log lines or warnings of a run were recorded.</summary>
public sealed record RunEventsAppended(long RunId, IReadOnlyList<RunEventDto> Events) : StudioEvent;

/// <summary>The machine benchmark advanced.</summary>
public sealed record BenchmarkProgress(double Fraction, string Phase) : StudioEvent;

/// <summary>The machine benchmark finished and its result was stored.</summary>
public sealed record BenchmarkCompleted(MachineBenchmarkDto Result) : StudioEvent;

/// <summary>The machine benchmark failed.</summary>
public sealed record BenchmarkFailed(string Message) : StudioEvent;

/// <summary>Fans every studio event out twice: to the SignalR hub (external clients, API users, tests)
/// and to in-process subscribers (Blazor components, which run on the server). Subscriptions are
/// disposable; components subscribe on first render and dispose the subscription in Dispose.
/// Each subscriber has its own queue, delivered in order by its own pump: publishing never runs a handler, so
/// the record writer (which publishes after every commit) never waits on page code. Blazor's
/// <c>InvokeAsync</c> runs the handler's work inline on the calling thread when the circuit is idle, so
/// before this a slow or stuck render on an open page stopped the studio from storing a run's records.</summary>
public sealed class StudioEvents(IHubContext<RunsHub> hub, ILogger<StudioEvents> logger)
{
    private readonly Lock _lock = new();
    private readonly ILogger _logger = logger;
    private Subscriber[] _subscribers = [];

    public IDisposable Subscribe(Action<StudioEvent> handler)
    {
        var subscriber = new Subscriber(this, handler);
        lock (_lock) _subscribers = [.. _subscribers, subscriber];
        return subscriber;
    }

    public void Publish(StudioEvent e)
    {
        foreach (var s in Volatile.Read(ref _subscribers)) s.Post(e);
        _ = SendToHubAsync(e);
    }

    private async Task SendToHubAsync(StudioEvent e)
    {
        try
        {
            await (e switch
            {
                RunListChanged r => hub.Clients.All.SendAsync(HubEvents.RunListChanged, r.RunId, r.Status),
                RunMetricsAppended m => hub.Clients.Group(RunsHub.RunGroup(m.RunId)).SendAsync(HubEvents.Metrics, m.RunId, m.Points),
                RunSamplesAppended s => hub.Clients.Group(RunsHub.RunGroup(s.RunId)).SendAsync(HubEvents.Samples, s.RunId, s.Samples),
                RunCheckpointAdded c => hub.Clients.Group(RunsHub.RunGroup(c.RunId)).SendAsync(HubEvents.Checkpoint, c.RunId, c.Checkpoint),
                RunProgressChanged p => hub.Clients.Group(RunsHub.RunGroup(p.RunId)).SendAsync(HubEvents.Progress, p.RunId, p.Progress),
                RunEventsAppended ev => hub.Clients.Group(RunsHub.RunGroup(ev.RunId)).SendAsync(HubEvents.Events, ev.RunId, ev.Events),
                BenchmarkProgress p => hub.Clients.Group(RunsHub.SystemGroup).SendAsync(HubEvents.BenchmarkProgress, p.Fraction, p.Phase),
                BenchmarkCompleted c => hub.Clients.Group(RunsHub.SystemGroup).SendAsync(HubEvents.BenchmarkCompleted, c.Result),
                BenchmarkFailed f => hub.Clients.Group(RunsHub.SystemGroup).SendAsync(HubEvents.BenchmarkFailed, f.Message),
                _ => Task.CompletedTask,
            });
        }
        catch (Exception ex)
        {
            _logger.LogWarning(ex, "Could not push {Event} to hub clients", e.GetType().Name);
        }
    }

    private sealed class Subscriber : IDisposable
    {
        private readonly StudioEvents _owner;
        private readonly Action<StudioEvent> _handler;
        private readonly Channel<StudioEvent> _queue = Channel.CreateUnbounded<StudioEvent>(new UnboundedChannelOptions { SingleReader = true });

        public Subscriber(StudioEvents owner, Action<StudioEvent> handler)
        {
            _owner = owner;
            _handler = handler;
            _ = Task.Run(PumpAsync);
        }

        public void Post(StudioEvent e) => _queue.Writer.TryWrite(e);

        private async Task PumpAsync()
        {
            await foreach (var e in _queue.Reader.ReadAllAsync())
            {
                try { _handler(e); }
                catch (Exception ex) { _owner._logger.LogWarning(ex, "A subscriber failed on {Event}", e.GetType().Name); }
            }
        }

        public void Dispose()
        {
            lock (_owner._lock) _owner._subscribers = _owner._subscribers.Where(s => s != this).ToArray();
            _queue.Writer.TryComplete();
        }
    }
}
