using System.Diagnostics;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Training;

/// <summary>Step timing for progress reports: the ETA is the mean of the last <c>window</c> step durations times the
/// steps left (a moving average follows speed changes such as a longer sequence length); reports are throttled to one
/// per <c>interval</c>, except those forced (first step, phase changes, the last step).</summary>
public sealed class ProgressMeter(IRunReporter reporter, long totalSteps, TimeSpan interval, int window = 20)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Queue<double> _recent = new();
    private double _recentSum;
    private TimeSpan _lastReport = TimeSpan.MinValue;

    public TimeSpan Elapsed => _clock.Elapsed;

    public void StepTook(TimeSpan duration)
    {
        _recent.Enqueue(duration.TotalSeconds);
        _recentSum += duration.TotalSeconds;
        if (_recent.Count > window) _recentSum -= _recent.Dequeue();
    }

    public TimeSpan? Eta(long step) =>
        _recent.Count == 0 ? null : TimeSpan.FromSeconds(_recentSum / _recent.Count * Math.Max(0, totalSteps - step));

    public void Report(long step, string phase = "train", bool force = false)
    {
        var now = _clock.Elapsed;
        if (!force && _lastReport != TimeSpan.MinValue && now - _lastReport < interval) return;
        _lastReport = now;
        reporter.Progress(new RunProgress(step, totalSteps, now, Eta(step), phase));
    }
}
