// Benchmarks of the engine against PyTorch on this machine, one command:
//   dotnet run -c Release --project bench/RlhfStudio.Bench -- [--quick] [--only id,id] [--no-pytorch] [--max-load L] [--wait S] [--rounds N]
//   ... -- --curves [steps]     bf16-compute vs fp32 training loss curves (tiny config)
//   ... -- --profile [--only decode-tiny]   where a training step and a decode step spend their time
using System.Globalization;
using System.Text.Json;
using RlhfStudio.Bench;
using RlhfStudio.Bench.Workloads;
using RlhfStudio.Engine.Runtime;

// Before the first torch call: libgomp reads its spin count when libtorch loads (Runtime/NativeSettings.cs).
NativeSettings.Apply();
var options = Options.Parse(args);
if (options is null) return 2;

// BENCH_THREADS=1 (both sides read it) is for CPU-time comparisons on a loaded machine; the default is libtorch's (2 here).
if (int.TryParse(Environment.GetEnvironmentVariable("BENCH_THREADS"), CultureInfo.InvariantCulture, out var threads)) TorchSharp.torch.set_num_threads(threads);
if (options.Child is string childId)
{
    var result = Suite.Run(Suite.Find(childId), options.Quick) with { };
    result = result with { PeakRssMiB = ChildProcess.PeakRssMiB() };
    Console.WriteLine(ChildProcess.ResultPrefix + JsonSerializer.Serialize(result, ChildProcess.Json));
    return 0;
}
if (options.Curves is int steps) return Curves.Run(steps);
if (options.Profile) return Profile.Run(options.Only.FirstOrDefault());

var machine = TorchRuntime.Describe();
int cores = Machine.PhysicalCores();
Console.WriteLine($"machine: {machine.CpuModel}, {cores} cores / {machine.LogicalCores} threads, torch threads {machine.Threads}, " +
                  $"bf16 {(machine.CpuHasBf16 ? "yes" : "no")}, AVX-512 {(machine.CpuHasAvx512 ? "yes" : "no")}");
string? peerError = options.NoPyTorch ? "skipped (--no-pytorch)" : PyTorchPeer.EnsureInstalled();
string peerVersion = peerError is null ? PyTorchPeer.Version() : "";
Console.WriteLine($"software: TorchSharp {machine.TorchSharpVersion}, libtorch {machine.LibTorchVersion}, {machine.DotNetVersion}; " +
                  (peerError is null ? $"PyTorch {peerVersion} (Debian python3-torch, OpenBLAS openmp, 2 threads)" : $"PyTorch: {peerError}"));
double maxLoad = options.MaxLoad ?? cores + 0.5;
var loadBefore = Machine.LoadAverage();
Console.WriteLine($"load average before: {loadBefore}{(options.Quick ? "; quick run (fewer repetitions)" : "")}");
if (!Machine.WaitForQuiet(maxLoad, options.WaitSeconds))
    Console.WriteLine($"WARNING: the load average stayed above {maxLoad} for {options.WaitSeconds} s: other processes share the CPU; " +
                      "figures are low and noisy (ratios within a pair, measured back to back, hold up better). See the CPU column.");
Console.WriteLine();

var rows = new List<Comparison>();
foreach (var spec in Suite.All.Where(s => options.Only.Count == 0 || options.Only.Any(o => s.Id.Contains(o, StringComparison.Ordinal))))
{
    Machine.WaitForQuiet(maxLoad, 20);
    string load = Machine.LoadAverage().Split(' ')[0];
    Console.Error.WriteLine($"{spec.Id} (load {load}) ...");
    var childArgs = new List<string> { "--child", spec.Id };
    if (options.Quick) childArgs.Add("--quick");
    // --rounds N: the two processes alternate N times and each side keeps its best round (this machine switches
    // between a fast and a slow mode for tens of seconds, so one pair can catch the two sides in different modes).
    var oursRounds = new List<Measurement?>();
    var torchRounds = new List<Measurement?>();
    for (int round = 0; round < options.Rounds; round++)
    {
        var ours = ChildProcess.Run(ChildProcess.Self(childArgs), "ours");
        // The PPO step's prompt length comes from our tokenizer and template: the PyTorch side gets the same.
        int? promptTokens = ours?.Phases?.TryGetValue(PpoStep.PromptTokensPhase, out var pt) == true ? (int)pt : null;
        var torch = peerError is null ? ChildProcess.Run(PyTorchPeer.Workload(spec.Id, options.Quick, promptTokens), "PyTorch") : null;
        Console.Error.WriteLine($"  ours {ours?.Best:N0} {ours?.Unit} (cpu {ours?.CpuShare:F2}, {ours?.Notes}); PyTorch {torch?.Best:N0} (cpu {torch?.CpuShare:F2}, {torch?.Notes})");
        oursRounds.Add(ours);
        torchRounds.Add(torch);
    }
    rows.Add(new Comparison(spec, Comparison.BestOf(oursRounds), Comparison.BestOf(torchRounds), load)
    {
        RoundRatios = options.Rounds > 1
            ? oursRounds.Zip(torchRounds, (o, t) => o is not null && t is not null ? o.Best / t.Best : double.NaN).ToList()
            : null,
    });
}
var loadAfter = Machine.LoadAverage();

var peaks = Report.Peaks(rows);
rows = rows.Select(r => r with
{
    OursMfu = Report.Mfu(r.Ours, peaks.GetValueOrDefault(r.Spec.DType)),
    PyTorchMfu = Report.Mfu(r.PyTorch, peaks.GetValueOrDefault(r.Spec.DType)),
}).ToList();
Report.PrintTable(Console.Out, rows);
if (options.Rounds > 1)
{
    Console.WriteLine();
    Console.WriteLine($"{options.Rounds} rounds per workload (ours, PyTorch, ours, ...), each side's best round above; ours/PyTorch of each round's pair:");
    foreach (var r in rows.Where(r => r.RoundRatios is not null))
        Console.WriteLine($"  {r.Spec.Id}: {string.Join("  ", r.RoundRatios!.Select(x => double.IsNaN(x) ? "-" : $"{x:F2}x"))}");
}
Console.WriteLine();
Console.WriteLine($"MFU = model FLOPs per iteration / best iteration time / machine matmul peak of the row's dtype ({string.Join(", ", peaks.Select(p => $"{p.Key} {p.Value:F0} GFLOP/s"))}: " +
                  $"the best {MatmulPeak.Size}^3 torch.mm of either library in this run);");
Console.WriteLine($"  {ModelFlops.Formula}");
Console.WriteLine("CPU = process CPU time / wall time over the timed repetitions (2.00 = both cores throughout; lower = other processes took CPU).");
Console.WriteLine("ours bf16 = fp32 master weights with bf16 compute; PyTorch bf16 = torch.autocast(\"cpu\", bfloat16) for training, a bf16 copy of the model for generation.");
Console.WriteLine($"load average after: {loadAfter}");
Console.WriteLine();
foreach (var r in rows)
    foreach (var (side, m) in new[] { ("ours", r.Ours), ("PyTorch", r.PyTorch) })
        if (m?.Phases is { } phases)
        {
            Console.WriteLine($"{r.Spec.Id} phases, {side} (ms):");
            foreach (var (phase, ms) in phases) Console.WriteLine($"  {phase}: {ms:F0}");
        }
Console.WriteLine();
var targets = Report.Targets(rows, peaks);
foreach (var t in targets) Console.WriteLine(t);

var folder = Path.Combine(Report.RepositoryRoot(), "bench", "results");
Directory.CreateDirectory(folder);
var file = Path.Combine(folder, $"{DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}-{(options.Quick ? "quick" : "full")}.json");
File.WriteAllText(file, JsonSerializer.Serialize(new
{
    timestampUtc = DateTime.UtcNow,
    options.Quick,
    machine,
    physicalCores = cores,
    pytorch = peerError is null ? peerVersion : peerError,
    loadAverageBefore = loadBefore,
    loadAverageAfter = loadAfter,
    peaksGflops = peaks,
    flopFormula = ModelFlops.Formula,
    targets,
    rows,
}, new JsonSerializerOptions(JsonSerializerDefaults.Web) { WriteIndented = true }) + "\n");
Console.WriteLine($"wrote {file}");
return 0;

internal sealed record Options(bool Quick, bool NoPyTorch, bool Profile, int? Curves, string? Child, IReadOnlyList<string> Only, double? MaxLoad, int WaitSeconds,
    int Rounds)
{
    private const string Usage = "usage: RlhfStudio.Bench [--quick] [--only id,id] [--no-pytorch] [--max-load L] [--wait S] [--rounds N] | --curves [steps] | --profile [--only training-tiny-bf16]";

    public static Options? Parse(string[] args)
    {
        bool quick = false, noPyTorch = false, profile = false;
        int? curves = null;
        string? child = null;
        var only = new List<string>();
        double? maxLoad = null;
        int wait = 180, rounds = 1;
        for (int i = 0; i < args.Length; i++)
        {
            string? Next() => i + 1 < args.Length ? args[++i] : null;
            switch (args[i])
            {
                case "--quick": quick = true; break;
                case "--no-pytorch": noPyTorch = true; break;
                case "--profile": profile = true; break;
                case "--curves":
                    curves = i + 1 < args.Length && int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out var s) ? s : 200;
                    if (i + 1 < args.Length && int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out _)) i++;
                    break;
                case "--child": child = Next(); break;
                case "--only": only.AddRange((Next() ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries)); break;
                case "--max-load": maxLoad = double.TryParse(Next(), CultureInfo.InvariantCulture, out var l) ? l : null; break;
                case "--wait": wait = int.TryParse(Next(), CultureInfo.InvariantCulture, out var w) ? w : 180; break;
                case "--rounds":
                    if (!int.TryParse(Next(), CultureInfo.InvariantCulture, out rounds) || rounds is < 1 or > 20)
                    {
                        Console.Error.WriteLine($"error: --rounds takes a whole number from 1 to 20; {Usage}");
                        return null;
                    }
                    break;
                default:
                    Console.Error.WriteLine($"error: unknown argument {args[i]}; {Usage}");
                    return null;
            }
        }
        return new Options(quick, noPyTorch, profile, curves, child, only, maxLoad, wait, rounds);
    }
}
