using System.Diagnostics;
using System.Text.Json;

namespace RlhfStudio.Bench;

/// <summary>Runs one workload in a child process (ours or PyTorch's) and reads back its result: each workload's peak
/// resident memory is then its own, and no workload inherits another's heap or thread pools.</summary>
public static class ChildProcess
{
    public const string ResultPrefix = "RESULT ";

    public static JsonSerializerOptions Json { get; } = new(JsonSerializerDefaults.Web) { WriteIndented = false };

    /// <summary>This program again, with <paramref name="args"/> (the apphost under dotnet run; "dotnet x.dll" otherwise).</summary>
    public static ProcessStartInfo Self(IEnumerable<string> args)
    {
        var path = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this program's path to start workload processes");
        var info = new ProcessStartInfo(path);
        if (Path.GetFileNameWithoutExtension(path) == "dotnet")
            info.ArgumentList.Add(typeof(ChildProcess).Assembly.Location);
        foreach (var a in args) info.ArgumentList.Add(a);
        return info;
    }

    /// <summary>Starts <paramref name="info"/>, waits, and parses its "RESULT {json}" line. Returns null (after printing
    /// the child's output) when it failed.</summary>
    public static Measurement? Run(ProcessStartInfo info, string label)
    {
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        info.UseShellExecute = false;
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {info.FileName}");
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        var line = stdout.Split('\n').LastOrDefault(l => l.StartsWith(ResultPrefix, StringComparison.Ordinal));
        if (process.ExitCode != 0 || line is null)
        {
            Console.Error.WriteLine($"  {label} failed (exit code {process.ExitCode}):");
            Console.Error.WriteLine(Indent(stdout + stderr.Result));
            return null;
        }
        return JsonSerializer.Deserialize<Measurement>(line[ResultPrefix.Length..], Json);
    }

    private static string Indent(string text) =>
        string.Join('\n', text.TrimEnd().Split('\n').TakeLast(40).Select(l => "    " + l));

    /// <summary>Peak resident set size (VmHWM) of this process in MiB, or null where /proc is missing.</summary>
    public static double? PeakRssMiB()
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            return line is null ? null : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) / 1024.0;
        }
        catch (IOException) { return null; }
    }
}

/// <summary>The PyTorch side: Debian's python3-torch run by /usr/bin/python3 (the pyenv python on PATH does not see
/// Debian's packages), installed with apt-get when missing.</summary>
public static class PyTorchPeer
{
    public const string Python = "/usr/bin/python3";

    public static string Script => Path.Combine(Report.RepositoryRoot(), "bench", "pytorch", "bench.py");

    /// <summary>Makes sure python3-torch and libopenblas0-openmp (without which PyTorch falls back to the reference
    /// BLAS, ~30x slower) are installed. Returns an error message, or null when ready.</summary>
    public static string? EnsureInstalled()
    {
        if (!File.Exists(Script)) return $"{Script} is missing";
        if (Works()) return null;
        Console.Error.WriteLine("installing python3-torch and libopenblas0-openmp with apt-get (the PyTorch side of the benchmark) ...");
        if (!Shell("apt-get", "install", "-y", "python3-torch", "libopenblas0-openmp"))
            Shell("apt-get", "update");
        if (!Works() && !Shell("apt-get", "install", "-y", "python3-torch", "libopenblas0-openmp"))
            return "apt-get install -y python3-torch libopenblas0-openmp failed (run it as root, then re-run the benchmark)";
        return Works() ? null : $"{Python} still cannot use torch with OpenBLAS (openmp) after installing";
    }

    private static bool Works()
    {
        if (!File.Exists(Python)) return false;
        var info = new ProcessStartInfo(Python, ["-c", "import torch"]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(info);
        if (p is null) return false;
        p.WaitForExit();
        // The reference BLAS works too, 30x slower: insist on the OpenMP OpenBLAS package being there.
        return p.ExitCode == 0 && Shell("dpkg", "-s", "libopenblas0-openmp");
    }

    private static bool Shell(string file, params string[] args)
    {
        try
        {
            var info = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
            info.Environment["DEBIAN_FRONTEND"] = "noninteractive";
            using var p = Process.Start(info);
            if (p is null) return false;
            p.StandardOutput.ReadToEnd();
            p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }

    /// <summary>bench.py for one workload, given its best: the OpenBLAS core-type overrides this environment sets
    /// (they force AVX2 kernels and halve OpenBLAS's fp32 matmul speed) are removed for this process only, glibc keeps
    /// large freed blocks (as our engine does); the script sets 2 threads itself.</summary>
    public static ProcessStartInfo Workload(string id, bool quick, int? promptTokens = null)
    {
        var info = new ProcessStartInfo(Python);
        info.ArgumentList.Add(Script);
        info.ArgumentList.Add("--workload");
        info.ArgumentList.Add(id);
        if (quick) info.ArgumentList.Add("--quick");
        if (promptTokens is int p)
        {
            info.ArgumentList.Add("--prompt-tokens");
            info.ArgumentList.Add(p.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        info.Environment.Remove("OPENBLAS_CORETYPE");
        info.Environment.Remove("OPENBLAS_L2_SIZE");
        // The same malloc behaviour our engine sets for itself (Runtime/NativeAllocator.cs): large freed blocks stay in
        // the heap instead of being unmapped and page-faulted in again every step (measured 4x on tiny training, both sides).
        info.Environment["MALLOC_MMAP_THRESHOLD_"] = "4294967296";
        info.Environment["MALLOC_TRIM_THRESHOLD_"] = "4294967296";
        return info;
    }

    public static string Version()
    {
        var info = new ProcessStartInfo(Python, ["-c", "import torch; print(torch.__version__)"]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(info);
        if (p is null) return "unknown";
        var v = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return v;
    }
}
