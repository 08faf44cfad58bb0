namespace RlhfStudio.Web.Components.Charts;

/// <summary>One line of a chart.</summary>
public sealed record ChartSeries(string Name, string Color, IReadOnlyList<(double X, double Y)> Points);

/// <summary>Pure functions behind the SVG line chart: smoothing, ranges and tick placement.</summary>
public static class ChartMath
{
    /// <summary>Exponential moving average with the debiasing TensorBoard and W&amp;B use, so the smoothed
    /// curve starts at the first value instead of at zero. <paramref name="weight"/> 0 = no smoothing.</summary>
    public static List<(double X, double Y)> Smooth(IReadOnlyList<(double X, double Y)> points, double weight)
    {
        var result = new List<(double X, double Y)>(points.Count);
        if (weight <= 0)
        {
            result.AddRange(points);
            return result;
        }
        double last = 0, debias = 0;
        foreach (var (x, y) in points)
        {
            last = last * weight + (1 - weight) * y;
            debias = debias * weight + (1 - weight);
            result.Add((x, last / debias));
        }
        return result;
    }

    /// <summary>"Nice" tick values (steps of 1, 2 or 5 x 10^k) covering [min, max], about <paramref name="count"/> of them.</summary>
    public static List<double> Ticks(double min, double max, int count = 5)
    {
        if (!(max > min)) return double.IsFinite(min) ? [min] : [];
        if (!double.IsFinite(max - min)) return [];
        double raw = (max - min) / Math.Max(1, count);
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = magnitude * (raw / magnitude < 1.5 ? 1 : raw / magnitude < 3 ? 2 : raw / magnitude < 7 ? 5 : 10);
        // Ticks are integer multiples of the step, counted by an int, so the loop is bounded however small the step is
        // next to the values (adding a step below their resolution never moves: 0.1 + 1e-18 == 0.1, 4e16 + 1 == 4e16).
        double first = Math.Ceiling(min / step), last = Math.Floor(max / step + 1e-9);
        if (!(last - first <= 4.0 * Math.Max(1, count) + 2)) return [min, max];
        var ticks = new List<double>();
        for (int i = 0; i <= (int)(last - first); i++)
        {
            double t = (first + i) * step;
            if (Math.Abs(t) < step * 1e-9) t = 0;
            if (ticks.Count == 0 || t > ticks[^1]) ticks.Add(t); // distinct values only
        }
        return ticks;
    }

    /// <summary>The finite points with no finite neighbour (a series' only point, or one between gaps): a path through
    /// them draws nothing, so the chart marks them with a dot (an evaluation run once so far, say).</summary>
    public static List<(double X, double Y)> Isolated(IReadOnlyList<(double X, double Y)> points)
    {
        var isolated = new List<(double X, double Y)>();
        for (int i = 0; i < points.Count; i++)
            if (double.IsFinite(points[i].Y)
                && (i == 0 || !double.IsFinite(points[i - 1].Y))
                && (i == points.Count - 1 || !double.IsFinite(points[i + 1].Y)))
                isolated.Add(points[i]);
        return isolated;
    }

    /// <summary>The value range of the series, padded by 5% so lines do not touch the frame.</summary>
    public static (double Min, double Max) Range(IEnumerable<double> values)
    {
        double min = double.PositiveInfinity, max = double.NegativeInfinity;
        foreach (var v in values)
        {
            if (!double.IsFinite(v)) continue;
            if (v < min) min = v;
            if (v > max) max = v;
        }
        if (double.IsInfinity(min)) return (0, 1);
        // A spread within rounding of the values (two evaluations summing the same counts in another order) is flat.
        if (max - min <= 1e-12 * Math.Max(Math.Abs(min), Math.Abs(max))) max = min;
        if (min == max) return (min - Math.Max(1e-9, Math.Abs(min) * 0.1), max + Math.Max(1e-9, Math.Abs(max) * 0.1));
        double pad = (max - min) * 0.05;
        return (min - pad, max + pad);
    }

    /// <summary>Compact label for an axis value: 12k, 1.5M, 0.0003 -> 3e-4.</summary>
    public static string Label(double v)
    {
        double a = Math.Abs(v);
        if (a == 0) return "0";
        if (a >= 1e6) return (v / 1e6).ToString("0.##") + "M";
        if (a >= 1e4) return (v / 1e3).ToString("0.#") + "k";
        if (a >= 100) return v.ToString("0");
        if (a >= 1) return v.ToString("0.##");
        if (a >= 0.01) return v.ToString("0.###");
        return v.ToString("0.#e0");
    }

    /// <summary>Labels for a set of ticks: the compact <see cref="Label(double)"/> when that tells them apart, else as many
    /// decimals as the tick spacing needs (a loss moving between 6.0201 and 6.0209 must not read "6.02" five times).</summary>
    public static List<string> TickLabels(IReadOnlyList<double> ticks)
    {
        var compact = ticks.Select(Label).ToList();
        if (ticks.Count < 2 || compact.Distinct().Count() == compact.Count) return compact;
        double step = Math.Abs(ticks[1] - ticks[0]);
        int decimals = Math.Clamp((int)Math.Ceiling(-Math.Log10(step)), 0, 12);
        return ticks.Select(t => t.ToString("F" + decimals, System.Globalization.CultureInfo.InvariantCulture)).ToList();
    }

    /// <summary>Seconds as m:ss or h:mm for a time axis.</summary>
    public static string Duration(double seconds) =>
        seconds < 3600 ? $"{(int)(seconds / 60)}:{(int)(seconds % 60):00}" : $"{(int)(seconds / 3600)}h{(int)(seconds % 3600 / 60):00}";
}
