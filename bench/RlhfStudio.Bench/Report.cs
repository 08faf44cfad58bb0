using System.Globalization;

namespace RlhfStudio.Bench;

internal static class Report
{
    public static void PrintTable(TextWriter w, IReadOnlyList<Measurement> results)
    {
        string[] header = ["workload", "dtype", "best", "median", "unit", "ms/iter (best)", "MFU", "notes"];
        var rows = results.Select(m => new[]
        {
            m.Workload, m.DType, Format(m.Best), Format(m.Median), m.Unit, m.MillisecondsPerIteration.ToString("F1", CultureInfo.InvariantCulture),
            m.ModelFlopUtilisation is double u ? u.ToString("P1", CultureInfo.InvariantCulture) : "", m.Notes ?? "",
        }).ToList();
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        void Row(string[] cells) => w.WriteLine("| " + string.Join(" | ", cells.Select((c, i) => c.PadRight(widths[i]))) + " |");
        Row(header);
        w.WriteLine("|" + string.Join("|", widths.Select(x => new string('-', x + 2))) + "|");
        foreach (var r in rows) Row(r);
    }

    private static string Format(double v) => v.ToString(v >= 100 ? "N0" : "N1", CultureInfo.InvariantCulture);

    /// <summary>The repository root (where RlhfStudio.sln is), found upwards from the working directory.</summary>
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
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
