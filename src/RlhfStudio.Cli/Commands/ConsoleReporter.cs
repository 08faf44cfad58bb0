using System.Globalization;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Cli.Commands;

/// <summary>Shows a training run on the console: one line per logged step (loss, lr, grad norm, accuracy, tokens/s) and
/// per evaluation, a few sample rows, checkpoints and events. On a terminal a single-line progress bar with an ETA is
/// redrawn on stderr below them; when output is redirected only the plain lines are written.</summary>
internal sealed class ConsoleReporter(CliOutput output, bool interactive) : IRunReporter
{
    private const int SampleRowsShown = 4;
    private const int BarWidth = 28;
    private RunProgress? _progress;
    private bool _barShown;

    public void Metrics(long step, IReadOnlyDictionary<string, double> values)
    {
        var train = values.Where(v => !v.Key.StartsWith("eval/", StringComparison.Ordinal)).ToDictionary();
        var eval = values.Where(v => v.Key.StartsWith("eval/", StringComparison.Ordinal)).ToList();
        if (train.ContainsKey(MetricNames.TrainLoss))
            Line($"step {step}{Total()}  {FormatTrain(train)}");
        else if (train.ContainsKey(MetricNames.ObjectiveScores))
            Line($"step {step}{Total()}  {FormatRl(train)}");
        if (eval.Count > 0)
            Line($"eval step {step}  " + string.Join("  ", eval.Select(v => $"{v.Key["eval/".Length..]} {Number(v.Value)}")));
    }

    private string Total() => _progress is { TotalSteps: > 0, Phase: not "tokenize" } p ? $"/{p.TotalSteps}" : "";

    private static string FormatTrain(Dictionary<string, double> v)
    {
        var parts = new List<string>();
        void Add(string key, string label, Func<double, string> format)
        {
            if (v.Remove(key, out var value)) parts.Add($"{label} {format(value)}");
        }
        Add(MetricNames.TrainLoss, "loss", x => x.ToString("F4", CultureInfo.InvariantCulture));
        Add(MetricNames.LearningRate, "lr", x => x.ToString("0.00e+0", CultureInfo.InvariantCulture));
        Add(MetricNames.GradNorm, "grad", x => x.ToString("F3", CultureInfo.InvariantCulture));
        Add(MetricNames.MeanTokenAccuracy, "acc", x => x.ToString("F3", CultureInfo.InvariantCulture));
        Add(MetricNames.TokensPerSecond, "tok/s", x => x.ToString("N0", CultureInfo.InvariantCulture));
        Add(MetricNames.Epoch, "epoch", x => x.ToString("F2", CultureInfo.InvariantCulture));
        parts.AddRange(v.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key} {Number(kv.Value)}"));
        return string.Join("  ", parts);
    }

    // PPO/RLOO log some twenty metrics a step; the line shows the ones to watch (the studio charts them all).
    private static string FormatRl(Dictionary<string, double> v)
    {
        (string Key, string Label)[] shown =
        [
            (MetricNames.ObjectiveScores, "score"), ("objective/true_score", "true"), (MetricNames.ObjectiveKl, "kl"),
            (MetricNames.ObjectiveRlhfReward, "rlhf"), (MetricNames.PolicyEntropy, "entropy"), (MetricNames.LossPolicy, "pg"),
            (MetricNames.LossValue, "vf"), (MetricNames.PolicyClipFrac, "clip"), (MetricNames.PolicyApproxKl, "approxkl"),
            (MetricNames.NumEosTokens, "eos"), (MetricNames.LearningRate, "lr"), (MetricNames.TokensPerSecond, "tok/s"),
        ];
        return string.Join("  ", shown.Where(s => v.ContainsKey(s.Key)).Select(s => $"{s.Label} {Number(v[s.Key])}"));
    }

    private static string Number(double value) => value.ToString("G4", CultureInfo.InvariantCulture);

    public void Samples(long step, IReadOnlyList<SampleRow> rows)
    {
        if (rows.Count == 0) return;
        Line($"{rows[0].Table} samples at step {step} ({Math.Min(rows.Count, SampleRowsShown)} of {rows.Count}):");
        foreach (var row in rows.Take(SampleRowsShown))
        {
            var score = row.Score is double s ? $" [{Number(s)}]" : "";
            var reference = row.Reference is null ? "" : $"  vs  {Short(row.Reference)}{(row.ReferenceScore is double r ? $" [{Number(r)}]" : "")}";
            Line($"  {Short(row.Prompt)}  ->  {Short(row.Completion)}{score}{reference}");
        }
    }

    private static string Short(string text)
    {
        var oneLine = text.ReplaceLineEndings(" ").Trim();
        return oneLine.Length <= 70 ? oneLine : oneLine[..67] + "...";
    }

    public void Checkpoint(CheckpointReport checkpoint) => Line($"saved {checkpoint.Path}");

    public void Progress(RunProgress progress)
    {
        _progress = progress;
        if (interactive) DrawBar();
    }

    public void Event(RunEvent runEvent)
    {
        var prefix = runEvent.Level switch
        {
            RunEventLevel.Warning => $"warning{(runEvent.Code is null ? "" : $" ({runEvent.Code})")}: ",
            RunEventLevel.Error => "error: ",
            _ => "",
        };
        foreach (var line in runEvent.Message.Split('\n')) Line(prefix + line);
    }

    /// <summary>Removes the progress bar before the final summary.</summary>
    public void Finish() => ClearBar();

    private void Line(string text)
    {
        ClearBar();
        output.Out.WriteLine(text);
        output.Out.Flush();
        if (interactive) DrawBar();
    }

    private void ClearBar()
    {
        if (!_barShown) return;
        output.Error.Write("\r\x1b[K");
        output.Error.Flush();
        _barShown = false;
    }

    private void DrawBar()
    {
        if (_progress is not { } p || p.TotalSteps <= 0) return;
        int filled = (int)Math.Round(p.Fraction * BarWidth);
        var eta = p.Eta is TimeSpan e ? $" eta {Duration(e)}" : "";
        output.Error.Write($"\r\x1b[K[{new string('#', filled)}{new string('.', BarWidth - filled)}] {p.Fraction,4:P0} {p.Step}/{p.TotalSteps} {p.Phase}" +
            $" {Duration(p.Elapsed)}{eta}");
        output.Error.Flush();
        _barShown = true;
    }

    public static string Duration(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:D2}m" : t.TotalMinutes >= 1 ? $"{(int)t.TotalMinutes}m{t.Seconds:D2}s" : $"{t.TotalSeconds:F0}s";
}
