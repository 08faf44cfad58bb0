using System.Diagnostics;

namespace RlhfStudio.Bench;

/// <summary>One benchmark figure of one process (ours or PyTorch's): a rate (higher is better) over timed repetitions.
/// The same JSON shape comes from bench/pytorch/bench.py.</summary>
public sealed record Measurement(
    string Id,
    string Unit,
    double Best,
    double Median,
    int Repetitions,
    double MillisecondsBest,
    double? FlopsPerIteration = null,
    string? Notes = null)
{
    /// <summary>Process CPU time over wall time during the timed repetitions (2.0 = both cores all the time). Below
    /// ~1.8 with 2 threads, other processes took CPU from the measurement.</summary>
    public double? CpuShare { get; init; }

    /// <summary>Process CPU time per repetition, in milliseconds: less sensitive to other processes than wall time
    /// (though waiting at thread barriers under contention still counts).</summary>
    public double? CpuMilliseconds { get; init; }

    /// <summary>VmHWM of the process that ran only this workload, in MiB.</summary>
    public double? PeakRssMiB { get; init; }

    /// <summary>Named sub-timings in milliseconds (phase splits, profiles).</summary>
    public Dictionary<string, double>? Phases { get; init; }
}

public static class Timing
{
    /// <summary>Untimed steps before a step workload is measured, both sides (bench.py's STEP_WARMUPS): ours reaches its
    /// steady state after ~5 training steps (.NET's tiered JIT promotes the hot managed code, the allocator's first growth),
    /// PyTorch's after one; runs are hundreds of steps, so the steady state is the figure that matters.</summary>
    public const int StepWarmups = 5;

    /// <summary>Runs <paramref name="work"/> <paramref name="warmups"/> times untimed, then <paramref name="repetitions"/>
    /// times timed. A gen-0 collection before each run frees the native Scalars of the previous one (TorchSharp does not
    /// track them), so runs do not pay for each other's garbage. Returns the seconds of each run and the process's CPU
    /// share over the timed runs.</summary>
    public static (List<double> Seconds, double CpuShare, double CpuSeconds) Run(Action work, int warmups, int repetitions)
    {
        for (int i = 0; i < warmups; i++) work();
        var times = new List<double>();
        var process = Process.GetCurrentProcess();
        process.Refresh();
        var cpuStart = process.TotalProcessorTime;
        var wall = Stopwatch.StartNew();
        for (int i = 0; i < repetitions; i++)
        {
            GC.Collect(0);
            var sw = Stopwatch.StartNew();
            work();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        process.Refresh();
        double cpu = (process.TotalProcessorTime - cpuStart).TotalSeconds;
        return (times, cpu / wall.Elapsed.TotalSeconds, cpu / repetitions);
    }

    /// <summary>A rate measurement from timed runs each doing <paramref name="unitsPerRun"/> units of work.</summary>
    public static Measurement Rate(string id, string unit, double unitsPerRun, (List<double> Seconds, double CpuShare, double CpuSeconds) run,
        double? flopsPerRun = null, string? notes = null)
    {
        var sorted = run.Seconds.Order().ToList();
        double best = sorted[0], median = sorted[sorted.Count / 2];
        return new Measurement(id, unit, unitsPerRun / best, unitsPerRun / median, sorted.Count, best * 1000, flopsPerRun, notes)
        {
            CpuShare = run.CpuShare,
            CpuMilliseconds = run.CpuSeconds * 1000,
        };
    }
}
