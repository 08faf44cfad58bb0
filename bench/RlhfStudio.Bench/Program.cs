// Benchmarks of the engine on this machine: dotnet run -c Release --project bench/RlhfStudio.Bench -- [--quick] [--profile]
using System.Globalization;
using System.Text.Json;
using RlhfStudio.Bench;
using RlhfStudio.Bench.Workloads;
using RlhfStudio.Engine.Runtime;

bool quick = args.Contains("--quick");
bool profile = args.Contains("--profile");
var unknown = args.Where(a => a is not ("--quick" or "--profile")).ToList();
if (unknown.Count > 0)
{
    Console.Error.WriteLine($"error: unknown argument(s) {string.Join(" ", unknown)}; usage: RlhfStudio.Bench [--quick] [--profile]");
    return 2;
}

// The matmul peak comes first: the model workloads report utilisation against it.
List<IWorkload> workloads = profile ? [new GenerationProfile()] : [new MatmulPeak("first"), new Prefill(), new Generate(), new MatmulPeak("last")];

var machine = TorchRuntime.Describe();
var loadBefore = Machine.LoadAverage();
Console.WriteLine($"machine: {machine.CpuModel}, {Machine.PhysicalCores()} cores / {machine.LogicalCores} threads, torch threads {machine.Threads}, " +
                  $"bf16 {(machine.CpuHasBf16 ? "yes" : "no")}, AVX-512 {(machine.CpuHasAvx512 ? "yes" : "no")}");
Console.WriteLine($"software: TorchSharp {machine.TorchSharpVersion}, libtorch {machine.LibTorchVersion}, {machine.DotNetVersion}");
Console.WriteLine($"load average before: {loadBefore}{(quick ? "; quick run (fewer repetitions)" : "")}");
Console.WriteLine();

var context = new BenchContext(quick);
var results = new List<Measurement>();
foreach (var workload in workloads)
{
    Console.Error.WriteLine($"running {workload.Name} ...");
    results.AddRange(workload.Run(context));
}
var loadAfter = Machine.LoadAverage();
var peaks = results.Where(m => m.Unit == "GFLOP/s").GroupBy(m => m.DType).ToDictionary(g => g.Key, g => g.Max(m => m.Best) * 1e9);
results = results.Select(m => m.FlopsPerIteration is double f && peaks.TryGetValue(m.DType, out var peak)
    ? m with { ModelFlopUtilisation = f / (m.MillisecondsPerIteration / 1000) / peak } : m).ToList();
Report.PrintTable(Console.Out, results);
Console.WriteLine();
Console.WriteLine($"model FLOP utilisation = achieved FLOP/s (best run) / best {MatmulPeak.Size}x{MatmulPeak.Size} matmul FLOP/s of the same dtype (first or last);");
Console.WriteLine($"  {ModelFlops.Formula}");
Console.WriteLine($"load average after: {loadAfter}");

var folder = Path.Combine(Report.RepositoryRoot(), "bench", "results");
Directory.CreateDirectory(folder);
var file = Path.Combine(folder, $"{DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}-{(profile ? "profile" : quick ? "quick" : "full")}.json");
File.WriteAllText(file, JsonSerializer.Serialize(new
{
    timestampUtc = DateTime.UtcNow,
    quick,
    machine,
    physicalCores = Machine.PhysicalCores(),
    loadAverageBefore = loadBefore,
    loadAverageAfter = loadAfter,
    flopFormula = ModelFlops.Formula,
    results,
}, new JsonSerializerOptions { WriteIndented = true }) + "\n");
Console.WriteLine($"wrote {file}");
return 0;
