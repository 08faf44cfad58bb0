using System.Diagnostics;

namespace RlhfStudio.Bench;

/// <summary>One benchmark figure: a rate (higher is better) over several timed repetitions.</summary>
public sealed record Measurement(
    string Workload,
    string DType,
    string Unit,
    double Best,
    double Median,
    int Repetitions,
    double MillisecondsPerIteration,
    double? FlopsPerIteration = null,
    string? Notes = null)
{
    /// <summary>Achieved FLOP/s over the best peak of the same dtype; set once the whole run is done.</summary>
    public double? ModelFlopUtilisation { get; init; }
}

public static class Timing
{
    /// <summary>Runs <paramref name="work"/> <paramref name="warmups"/> times untimed, then <paramref name="repetitions"/>
    /// times timed; returns the seconds of each timed run. A gen-0 collection before each run frees the native Scalars
    /// of the previous one (TorchSharp does not track them), so runs do not pay for each other's garbage.</summary>
    public static List<double> Seconds(Action work, int warmups, int repetitions)
    {
        for (int i = 0; i < warmups; i++) work();
        var times = new List<double>();
        for (int i = 0; i < repetitions; i++)
        {
            GC.Collect(0);
            var sw = Stopwatch.StartNew();
            work();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        return times;
    }

    /// <summary>A rate measurement from timed runs each doing <paramref name="unitsPerRun"/> units of work.</summary>
    public static Measurement Rate(string workload, string dtype, string unit, double unitsPerRun, List<double> seconds,
        double? flopsPerRun = null, string? notes = null)
    {
        var sorted = seconds.Order().ToList();
        double best = sorted[0], median = sorted[sorted.Count / 2];
        return new Measurement(workload, dtype, unit, unitsPerRun / best, unitsPerRun / median, seconds.Count, best * 1000, flopsPerRun, notes);
    }
}
