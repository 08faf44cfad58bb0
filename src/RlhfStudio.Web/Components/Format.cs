namespace RlhfStudio.Web.Components;

/// <summary>How times, durations and numbers are shown across pages.</summary>
public static class Format
{
    public static string Time(DateTimeOffset? t) => t is null ? "" : t.Value.ToLocalTime().ToString("yyyy-MM-dd HH:mm");

    public static string Duration(DateTimeOffset? start, DateTimeOffset? end) =>
        start is null ? "" : Duration((end ?? DateTimeOffset.UtcNow) - start.Value);

    public static string Duration(TimeSpan d) =>
        d.TotalSeconds < 60 ? $"{d.TotalSeconds:0}s"
        : d.TotalMinutes < 60 ? $"{(int)d.TotalMinutes}m {d.Seconds:00}s"
        : $"{(int)d.TotalHours}h {d.Minutes:00}m";

    public static string Gflops(double v) => v.ToString("N0") + " GFLOP/s";
}
