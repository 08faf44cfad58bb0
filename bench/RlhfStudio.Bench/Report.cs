using System.Globalization;
using RlhfStudio.Bench.Workloads;

namespace RlhfStudio.Bench;

/// <summary>One workload measured by both sides, with utilisation against the machine's matmul peak.</summary>
public sealed record Comparison(WorkloadSpec Spec, Measurement? Ours, Measurement? PyTorch, string LoadBefore)
{
    public double? Ratio => Ours is not null && PyTorch is not null ? Ours.Best / PyTorch.Best : null;
    public double? OursMfu { get; init; }
    public double? PyTorchMfu { get; init; }
    /// <summary>ours/PyTorch of each round's pair when the workload ran several rounds (NaN where a side failed).</summary>
    public IReadOnlyList<double>? RoundRatios { get; init; }

    /// <summary>The round with the best figure (every unit here is higher-is-better), or null when every round failed.</summary>
    public static Measurement? BestOf(IEnumerable<Measurement?> rounds) => rounds.OfType<Measurement>().MaxBy(m => m.Best);
}

internal static class Report
{
    // bench/pytorch's PPO phases.
    private const string TorchRollout = "rollout: refreshing the sampling copy and the sampling loop (best)";
    private const string TorchReference = "  reference pass (best)";
    private const string TorchExperienceOverRollout = "experience (rollout + reference + scoring) / its rollout phase, same step (best, x1000)";

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>The machine's matmul peak per dtype: the best of either library's measurement in this run.</summary>
    public static Dictionary<string, double> Peaks(IEnumerable<Comparison> rows) =>
        rows.Where(r => r.Spec.Kind == "matmul")
            .GroupBy(r => r.Spec.DType)
            .ToDictionary(g => g.Key, g => g.SelectMany(r => new[] { r.Ours?.Best, r.PyTorch?.Best }).Max() ?? double.NaN);

    public static double? Mfu(Measurement? m, double? peakGflops) =>
        m?.FlopsPerIteration is double f && peakGflops is double p && p > 0 ? f / (m.MillisecondsBest / 1000) / (p * 1e9) : null;

    public static void PrintTable(TextWriter w, IReadOnlyList<Comparison> rows)
    {
        string[] header = ["workload", "unit", "ours best", "ours median", "PyTorch best", "PyTorch median", "ours/PyTorch", "MFU ours", "MFU PyTorch",
            "peak RSS ours", "peak RSS PyTorch", "CPU ours/PyTorch", "load before"];
        var cells = rows.Select(r => new[]
        {
            r.Spec.Id, r.Ours?.Unit ?? r.PyTorch?.Unit ?? "", Format(r.Ours?.Best), Format(r.Ours?.Median), Format(r.PyTorch?.Best), Format(r.PyTorch?.Median),
            r.Ratio is double x ? x.ToString("F2", Inv) + "x" : "",
            Percent(r.OursMfu), Percent(r.PyTorchMfu), Mib(r.Ours?.PeakRssMiB), Mib(r.PyTorch?.PeakRssMiB),
            $"{Share(r.Ours?.CpuShare)}/{Share(r.PyTorch?.CpuShare)}", r.LoadBefore,
        }).ToList();
        PrintMarkdown(w, header, cells);
    }

    public static void PrintMarkdown(TextWriter w, string[] header, IReadOnlyList<string[]> rows)
    {
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        void Row(string[] cells) => w.WriteLine("| " + string.Join(" | ", cells.Select((c, i) => c.PadRight(widths[i]))) + " |");
        Row(header);
        w.WriteLine("|" + string.Join("|", widths.Select(x => new string('-', x + 2))) + "|");
        foreach (var r in rows) Row(r);
    }

    /// <summary>The issue's targets, judged on this run's figures (best of the repetitions; "best mode" = the faster
    /// dtype of each side).</summary>
    public static List<string> Targets(IReadOnlyList<Comparison> rows, Dictionary<string, double> peaks)
    {
        var lines = new List<string>();
        (Comparison? Ours, Comparison? Torch) BestModes(string family) =>
            (rows.Where(r => r.Spec.Family == family && r.Ours is not null).MaxBy(r => r.Ours!.Best),
             rows.Where(r => r.Spec.Family == family && r.PyTorch is not null).MaxBy(r => r.PyTorch!.Best));
        void Ratio(string family, string what, double target)
        {
            var (o, t) = BestModes(family);
            if (o is null || t is null) { lines.Add($"?    {what}: not measured"); return; }
            double ratio = o.Ours!.Best / t.PyTorch!.Best;
            lines.Add($"{(ratio >= target ? "PASS" : "FAIL")} {what}: ours {Format(o.Ours.Best)} ({o.Spec.DType}) / PyTorch {Format(t.PyTorch.Best)} ({t.Spec.DType}) = {ratio:F2}x (target >= {target:F1}x)");
        }
        Ratio("train-tiny", "tiny training, best mode vs best mode", 1.5);
        var (small, _) = BestModes("train-25M");
        if (small is not null && peaks.TryGetValue("bf16", out var bf16Peak))
        {
            double u = Mfu(small.Ours, bf16Peak) ?? 0;
            lines.Add($"{(u >= 0.40 ? "PASS" : "FAIL")} 25M training, best mode ({small.Spec.DType}): {u:P1} of the bf16 matmul peak {bf16Peak:F0} GFLOP/s (target >= 40%)");
        }
        else lines.Add("?    25M training MFU: not measured");
        Ratio("generate-tiny", "tiny generation, best mode vs best mode", 1.5);
        Ratio("generate-25M", "25M generation, best mode vs best mode", 1.5);
        var ppo = rows.FirstOrDefault(r => r.Spec.Kind == "ppo");
        if (ppo?.Ours?.Phases is { } phases)
        {
            double experienceOverRollout = phases[PpoStep.ExperienceOverRolloutPhase] / 1000;
            // The verdict: the trainer's rollout phase (the row's route: the sampling loop with the log-probabilities and
            // values it reads) over pure generation of the same prompts timed after each of the same steps, best over
            // best; the machine's speed drifts by 10-30% within minutes, so the two are measured interleaved.
            double? rolloutOverPure = phases.TryGetValue(PpoStep.RolloutOverPurePhase, out var q) ? q / 1000 : null;
            double? samplingOverPure = phases.TryGetValue(PpoStep.SamplingOverPurePhase, out var f) ? f / 1000 : null;
            lines.Add($"{(rolloutOverPure is double r ? (r <= 1.2 ? "PASS" : "FAIL") : "?   ")} PPO rollout phase / pure generation at the same size, value head on the policy (the row's route): " +
                      $"{(rolloutOverPure is double r2 ? $"{r2:F2}x" : "not measured")} (the trainer's rollout phase vs pure generation timed after each of its steps; " +
                      $"the sampling loop with log-probs and values vs without, alternating outside the trainer: {(samplingOverPure is double s0 ? $"{s0:F2}x" : "?")}) (target <= 1.2x)");
            lines.Add($"     phases of the step (best, ms): rollout {phases[PpoStep.SharedRolloutPhase]:F0}, reference pass {phases[PpoStep.SharedReferencePhase]:F0}, " +
                      $"scoring {phases["  scoring (best), sharedValueHead"]:F0}, optimise {phases["  optimise: advantages and 4 PPO epochs (best), sharedValueHead"]:F0}; " +
                      $"rollout + reference + scoring = {experienceOverRollout:F2}x the rollout phase (same step), " +
                      $"{(rolloutOverPure is double s ? $"{experienceOverRollout * s:F2}x" : "?")} pure generation");
            lines.Add($"     separate value model (TRL's PPOTrainer): value pass {phases["  value model pass (best), separate value model"]:F0} ms, everything before the " +
                      $"optimisation {phases["experience / its rollout phase, same step (best, x1000): separate value model"] / 1000:F2}x its rollout phase; recomputing the " +
                      $"policy's log-probs: its forward {phases["  policy forward recomputing log-probs (best), recomputeLogProbs"]:F0} ms, " +
                      $"{phases["experience / its rollout phase, same step (best, x1000): recomputed log-probs"] / 1000:F2}x");
            if (ppo.PyTorch?.Phases is { } torch)
            {
                lines.Add($"     PyTorch, same route (value head on the policy, log-probs and values from sampling): rollout {torch[TorchRollout]:F0} ms " +
                          $"(ours {phases[PpoStep.SharedRolloutPhase]:F0} ms, {torch[TorchRollout] / phases[PpoStep.SharedRolloutPhase]:F2}x faster), reference pass " +
                          $"{torch[TorchReference]:F0} ms (ours {phases[PpoStep.SharedReferencePhase]:F0}), rollout + reference + scoring " +
                          $"{torch[TorchExperienceOverRollout] / 1000:F2}x its rollout phase; whole step {ppo.Ratio:F2}x");
            }
        }
        return lines;
    }

    private static string Format(double? v) => v is not double x ? "" : x.ToString(x >= 100 ? "N0" : "N1", Inv);
    private static string Percent(double? v) => v is double x ? x.ToString("P1", Inv) : "";
    private static string Mib(double? v) => v is double x ? $"{x:F0} MiB" : "";
    private static string Share(double? v) => v is double x ? x.ToString("F2", Inv) : "-";

    /// <summary>The repository root (where RlhfStudio.sln is), found upwards from the working directory.</summary>
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "RlhfStudio.sln"))) return dir.FullName;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "RlhfStudio.sln"))) return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}

internal static class Machine
{
    public static string LoadAverage()
    {
        try { return string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "unknown"; }
    }

    public static double OneMinuteLoad() =>
        double.TryParse(LoadAverage().Split(' ')[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var l) ? l : 0;

    /// <summary>Waits up to <paramref name="maxSeconds"/> for the one-minute load average to drop to
    /// <paramref name="threshold"/>; returns whether it did.</summary>
    public static bool WaitForQuiet(double threshold, int maxSeconds)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        bool told = false;
        while (OneMinuteLoad() > threshold)
        {
            if (sw.Elapsed.TotalSeconds >= maxSeconds) return false;
            if (!told) Console.Error.WriteLine($"  load average {LoadAverage()} > {threshold}: waiting up to {maxSeconds} s for a quieter moment ...");
            told = true;
            Thread.Sleep(5000);
        }
        return true;
    }

    /// <summary>Distinct (physical id, core id) pairs in /proc/cpuinfo; the logical count where that is unavailable.</summary>
    public static int PhysicalCores()
    {
        try
        {
            var cores = new HashSet<string>();
            string physical = "0";
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (line.StartsWith("physical id", StringComparison.Ordinal)) physical = line[(line.IndexOf(':') + 1)..].Trim();
                else if (line.StartsWith("core id", StringComparison.Ordinal)) cores.Add(physical + ":" + line[(line.IndexOf(':') + 1)..].Trim());
            }
            return cores.Count > 0 ? cores.Count : Environment.ProcessorCount;
        }
        catch (IOException) { return Environment.ProcessorCount; }
    }
}
