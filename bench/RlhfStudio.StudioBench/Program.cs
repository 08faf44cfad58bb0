// Studio back-end benchmark: how fast the records and the live stream are.
//   dotnet run -c Release --project bench/RlhfStudio.StudioBench [-- --quick]
// Prints a table and writes bench/results/studio-<time>.json. Everything runs on loopback.
using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Web;
using RlhfStudio.Web.Hubs;
using RlhfStudio.Web.Services;

bool quick = args.Contains("--quick");
var dataFolder = Path.Combine(Path.GetTempPath(), "rlhfstudio-bench", Guid.NewGuid().ToString("N"));
var builder = WebApplication.CreateBuilder(new WebApplicationOptions
{
    Args = ["--urls", "http://127.0.0.1:0", $"--Studio:DataFolder={dataFolder}"],
    ApplicationName = "RlhfStudio.Web", // the studio's static asset manifests are named after it
});
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.AddStudioServices();
var app = builder.Build();
await app.InitializeStudioAsync();
app.MapStudio();
await app.StartAsync();
var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
var results = new List<(string Name, string Value, string Unit, string Note)>();
void Row(string name, double value, string unit, string note = "") { results.Add((name, value.ToString("N0"), unit, note)); Console.WriteLine($"{name,-48} {value,14:N0} {unit,-12} {note}"); }

Console.WriteLine($"RlhfStudio studio benchmark · {Cpu()} · {Environment.ProcessorCount} cores · load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
Console.WriteLine(new string('-', 100));

long NewRun(string name)
{
    using var scope = app.Services.CreateScope();
    var db = scope.ServiceProvider.GetRequiredService<IDbContextFactory<StudioDbContext>>().CreateDbContext();
    var run = new RunRecord { Name = name, Method = "sft", CreatedAt = DateTimeOffset.UtcNow, Status = RunStatus.Completed };
    db.Runs.Add(run);
    db.SaveChanges();
    return run.Id;
}

// 1. Metric points written per second: batches as the record writer makes them (5 metrics per step).
{
    var journal = app.Services.GetRequiredService<RunJournal>();
    long runId = NewRun("write");
    int steps = quick ? 20_000 : 100_000;
    var sw = Stopwatch.StartNew();
    for (int start = 0; start < steps; start += 2000)
    {
        var batch = new RecordBatch();
        for (int s = start; s < start + 2000; s++)
            foreach (var name in new[] { "train/loss", "train/learning_rate", "train/grad_norm", "train/mean_token_accuracy", "train/tokens_per_second" })
                batch.Metrics.Add(new MetricInput(runId, name, s, Math.Sin(s), s));
        await journal.WriteAsync(batch);
    }
    Row("metric points written (batches of 10,000)", steps * 5 / sw.Elapsed.TotalSeconds, "points/s", $"{steps * 5:N0} points");
}

// 2. Through the live path: reporter -> record writer -> SQLite -> hub, to 20 connected clients.
{
    var writer = app.Services.GetRequiredService<RecordWriter>();
    long runId = NewRun("stream");
    int clients = 20, steps = quick ? 2_000 : 10_000;
    var latencies = new List<double>();
    long messages = 0, points = 0;
    var connections = new List<HubConnection>();
    for (int c = 0; c < clients; c++)
    {
        var hub = new HubConnectionBuilder().WithUrl(new Uri(new Uri(address), RunsHub.Path)).Build();
        hub.On<long, List<MetricPointDto>>(HubEvents.Metrics, (_, batch) =>
        {
            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            lock (latencies)
            {
                messages++;
                points += batch.Count;
                foreach (var p in batch) latencies.Add(now - p.TimeMs);
            }
        });
        await hub.StartAsync();
        await hub.InvokeAsync<RunHistory>("WatchRun", runId, 10);
        connections.Add(hub);
    }
    // The engine reports a step every ~1 ms with 5 metrics (a fast tiny-model run).
    var sw = Stopwatch.StartNew();
    for (int s = 1; s <= steps; s++)
    {
        writer.Metrics(runId, s, new Dictionary<string, double> { ["train/loss"] = 1.0 / s, ["train/learning_rate"] = 1e-4, ["train/grad_norm"] = 1, ["a"] = 2, ["b"] = 3 });
        if (s % 10 == 0) Thread.Sleep(10);
    }
    await writer.FlushAsync();
    long expected = (long)steps * 5 * clients;
    var deadline = DateTime.UtcNow.AddSeconds(30);
    while (Interlocked.Read(ref points) < expected && DateTime.UtcNow < deadline) await Task.Delay(50);
    double seconds = sw.Elapsed.TotalSeconds;
    lock (latencies)
    {
        latencies.Sort();
        Row("hub messages delivered (20 clients)", messages / seconds, "msgs/s", $"{messages:N0} messages carrying {points:N0} points in {seconds:N1} s");
        Row("hub messages per client", messages / (double)clients / seconds, "msgs/s", "batched by the record writer (250 ms window)");
        Row("metric points delivered to clients", points / seconds, "points/s", points == expected ? "none lost" : $"MISSING {expected - points:N0}");
        Row("latency engine report -> client, p50", latencies[latencies.Count / 2], "ms");
        Row("latency engine report -> client, p95", latencies[(int)(latencies.Count * 0.95)], "ms");
    }
    foreach (var hub in connections) await hub.DisposeAsync();
}

// 3. A 1,000,000-point series downsampled to 2,000 points (keeping each bucket's extremes).
{
    var journal = app.Services.GetRequiredService<RunJournal>();
    long runId = NewRun("long");
    int n = quick ? 200_000 : 1_000_000;
    for (int start = 0; start < n; start += 20_000)
    {
        var batch = new RecordBatch();
        for (int s = start; s < start + 20_000; s++) batch.Metrics.Add(new MetricInput(runId, "train/loss", s, Math.Exp(-s / 300_000.0) + Math.Sin(s) * 0.01, s));
        await journal.WriteAsync(batch);
    }
    var store = app.Services.GetRequiredService<MetricStore>();
    var times = new List<double>();
    int count = 0;
    for (int rep = 0; rep < 5; rep++)
    {
        var sw = Stopwatch.StartNew();
        var pts = await store.ReadDownsampledAsync(runId, "train/loss", long.MinValue, long.MaxValue, 2000);
        times.Add(sw.Elapsed.TotalMilliseconds);
        count = pts.Count;
    }
    times.Sort();
    Row($"{n:N0}-point series -> {count:N0} points (store)", times[0], "ms", $"best of 5; median {times[2]:N0} ms");
    using var http = new HttpClient { BaseAddress = new Uri(address) };
    var httpTimes = new List<double>();
    for (int rep = 0; rep < 5; rep++)
    {
        var sw = Stopwatch.StartNew();
        var json = await http.GetFromJsonAsync<JsonElement>($"/api/runs/{runId}/metrics?names=train/loss&maxPoints=2000");
        httpTimes.Add(sw.Elapsed.TotalMilliseconds);
    }
    httpTimes.Sort();
    Row($"{n:N0}-point series via GET /api/runs/{{id}}/metrics", httpTimes[0], "ms", $"best of 5; median {httpTimes[2]:N0} ms");
}

await app.StopAsync();
var outDir = Path.Combine(FindRoot(), "bench", "results");
Directory.CreateDirectory(outDir);
var file = Path.Combine(outDir, $"studio-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
await File.WriteAllTextAsync(file, JsonSerializer.Serialize(new { machine = Cpu(), cores = Environment.ProcessorCount, quick,
    results = results.Select(r => new { r.Name, r.Value, r.Unit, r.Note }) }, new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine($"written {file}");
Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
Directory.Delete(dataFolder, true);

static string Cpu() => File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "unknown CPU";
static string FindRoot()
{
    var dir = new DirectoryInfo(AppContext.BaseDirectory);
    while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "RlhfStudio.sln"))) dir = dir.Parent;
    return dir?.FullName ?? Directory.GetCurrentDirectory();
}
