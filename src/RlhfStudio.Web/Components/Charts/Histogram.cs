namespace RlhfStudio.Web.Components.Charts;

/// <summary>One bar of a histogram: values in [From, To).</summary>
public sealed record HistogramBin(double From, double To, int Count);

/// <summary>Equal-width bins with "nice" edges (multiples of 1, 2 or 5 x 10^k), so the axis reads 0, 50, 100 ...</summary>
public static class Histogram
{
    /// <param name="minWidth">Narrowest bin (1 for integer data such as token counts).</param>
    public static IReadOnlyList<HistogramBin> Bins(IReadOnlyCollection<double> values, int targetBins = 20, double minWidth = 0)
    {
        var finite = values.Where(double.IsFinite).ToList();
        if (finite.Count == 0) return [];
        double min = finite.Min(), max = finite.Max();
        double width = Math.Max(minWidth, NiceWidth((max - min) / Math.Max(1, targetBins)));
        double start = Math.Floor(min / width) * width;
        int count = Math.Max(1, (int)Math.Floor((max - start) / width) + 1);
        var counts = new int[count];
        // Clamped both ways: at values far larger than the width, start rounds and may land above the smallest value.
        foreach (var v in finite) counts[Math.Clamp((int)Math.Floor((v - start) / width), 0, count - 1)]++;
        return counts.Select((c, i) => new HistogramBin(start + i * width, start + (i + 1) * width, c)).ToList();
    }

    /// <summary>The smallest of 1, 2, 5 x 10^k at least <paramref name="raw"/> (1 for a zero range).</summary>
    public static double NiceWidth(double raw)
    {
        if (!(raw > 0)) return 1;
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double f = raw / magnitude;
        return magnitude * (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10);
    }
}
