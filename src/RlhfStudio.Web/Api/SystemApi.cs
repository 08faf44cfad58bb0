using Microsoft.AspNetCore.Http.HttpResults;
using RlhfStudio.Engine.Runtime;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Api;

/// <summary>What the machine is and how fast it multiplies matrices.</summary>
public static class SystemApi
{
    public static IEndpointRouteBuilder MapSystemApi(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/system").WithTags("System");
        api.MapGet("/", GetSystem).WithName("GetSystem")
            .WithSummary("Runtime versions, threads, bf16 support and the measured matmul GFLOP/s (measured now if never measured).");
        api.MapPost("/benchmark", StartBenchmark).WithName("StartMachineBenchmark")
            .WithSummary("Starts a new fp32/bf16 matmul measurement; progress streams to the hub group \"system\".");
        api.MapGet("/benchmarks", GetHistory).WithName("GetMachineBenchmarks").WithSummary("Stored measurements, newest first.");
        return app;
    }

    public sealed record SystemResponse(RuntimeInfo Runtime, MachineBenchmarkDto Benchmark, bool BenchmarkRunning);

    private static async Task<Ok<SystemResponse>> GetSystem(MachineBenchmarkService benchmarks, CancellationToken cancel)
    {
        var latest = await benchmarks.LatestAsync(cancel) ?? await benchmarks.StartAsync().WaitAsync(cancel);
        return TypedResults.Ok(new SystemResponse(TorchRuntime.Describe(), latest, benchmarks.IsRunning));
    }

    private static Results<Accepted<object>, BadRequest<string>> StartBenchmark(MachineBenchmarkService benchmarks, int? size)
    {
        if (size is < 64 or > 8192) return TypedResults.BadRequest("size must be between 64 and 8192");
        bool wasRunning = benchmarks.IsRunning;
        _ = benchmarks.StartAsync(size);
        return TypedResults.Accepted("/api/system", (object)new { started = !wasRunning, running = true });
    }

    private static async Task<Ok<IReadOnlyList<MachineBenchmarkDto>>> GetHistory(MachineBenchmarkService benchmarks, CancellationToken cancel) =>
        TypedResults.Ok(await benchmarks.HistoryAsync(20, cancel));
}
