using System.Diagnostics;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Runtime;

/// <summary>What the engine runs on: library versions, threads, devices and CPU features.</summary>
public sealed record RuntimeInfo(
    string TorchSharpVersion,
    string LibTorchVersion,
    int Threads,
    int InteropThreads,
    int LogicalCores,
    string CpuModel,
    bool CpuHasBf16,
    bool CpuHasAvx512,
    bool CudaAvailable,
    string OperatingSystem,
    string DotNetVersion);

public static class TorchRuntime
{
    /// <summary>Loads the native backend (if not yet loaded) and describes the machine.</summary>
    public static RuntimeInfo Describe()
    {
        var flags = CpuFlags();
        return new RuntimeInfo(
            TorchSharpVersion: typeof(torch).Assembly.GetName().Version?.ToString(3) ?? "unknown",
            LibTorchVersion: torch.__version__,
            Threads: torch.get_num_threads(),
            InteropThreads: torch.get_num_interop_threads(),
            LogicalCores: Environment.ProcessorCount,
            CpuModel: CpuModel(),
            CpuHasBf16: flags.Contains("avx512_bf16") || flags.Contains("amx_bf16"),
            CpuHasAvx512: flags.Contains("avx512f"),
            CudaAvailable: torch.cuda.is_available(),
            OperatingSystem: RuntimeInformation.OSDescription,
            DotNetVersion: RuntimeInformation.FrameworkDescription);
    }

    /// <summary>Parses "cpu", "cuda", "cuda:1" into a device, with a clear error when it is not available.</summary>
    public static Device ParseDevice(string name)
    {
        if (name.StartsWith("cuda", StringComparison.Ordinal) && !torch.cuda.is_available())
            throw new InvalidOperationException($"device \"{name}\" was asked for, but no CUDA device is available to this process");
        return torch.device(name);
    }

    private static HashSet<string> CpuFlags()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("flags", StringComparison.Ordinal))
                    return [.. line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries)];
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return [];
    }

    private static string CpuModel()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal))
                    return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }
}

/// <summary>Result of a square matmul benchmark in one dtype.</summary>
public sealed record MatmulResult(string DType, int Size, double BestGflops, double MedianGflops, int Repetitions);

/// <summary>Measures the machine's dense matmul throughput (GFLOP/s) through TorchSharp: the peak that
/// model FLOP utilisation is compared against.</summary>
public static class MatmulBenchmark
{
    /// <summary>Times <c>torch.mm</c> of two n x n matrices: <paramref name="repetitions"/> timed rounds of
    /// <paramref name="callsPerRound"/> calls after one warm-up round. Progress goes to <paramref name="progress"/>
    /// as a fraction in [0, 1].</summary>
    public static MatmulResult Measure(ScalarType dtype, int size = 1024, int repetitions = 5, int callsPerRound = 4,
        IProgress<double>? progress = null, CancellationToken cancel = default)
    {
        if (size < 16 || size > 16384) throw new ArgumentOutOfRangeException(nameof(size), "matrix size must be between 16 and 16384");
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var gen = new torch.Generator(1234);
        var a = torch.randn([size, size], generator: gen).to(dtype);
        var b = torch.randn([size, size], generator: gen).to(dtype);
        double flops = 2.0 * size * size * size * callsPerRound;
        var rates = new List<double>();
        for (int r = -1; r < repetitions; r++)
        {
            cancel.ThrowIfCancellationRequested();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < callsPerRound; i++) { using var product = torch.mm(a, b); }
            sw.Stop();
            if (r >= 0) rates.Add(flops / sw.Elapsed.TotalSeconds / 1e9);
            progress?.Report((r + 2) / (double)(repetitions + 1));
        }
        rates.Sort();
        return new MatmulResult(dtype.ToString().ToLowerInvariant() switch { "float32" => "fp32", "bfloat16" => "bf16", var s => s },
            size, rates[^1], rates[rates.Count / 2], repetitions);
    }
}
