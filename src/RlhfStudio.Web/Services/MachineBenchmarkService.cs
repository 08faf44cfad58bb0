using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Runtime;
using TorchSharp;

namespace RlhfStudio.Web.Services;

/// <summary>A stored machine measurement as the API and the hub send it.</summary>
public sealed record MachineBenchmarkDto(long Id, DateTimeOffset CreatedAt, int Size, double Fp32Gflops, double Bf16Gflops,
    int Threads, string CpuModel, string LibTorchVersion)
{
    public static MachineBenchmarkDto From(MachineBenchmarkRecord r) =>
        new(r.Id, r.CreatedAt, r.Size, r.Fp32Gflops, r.Bf16Gflops, r.Threads, r.CpuModel, r.LibTorchVersion);
}

/// <summary>Measures this machine's fp32 and bf16 matmul throughput on a background thread (one
/// measurement at a time), streams progress as <see cref="BenchmarkProgress"/> events and stores the
/// result. Its figures are the peak that training speed and time estimates are measured against.</summary>
public sealed class MachineBenchmarkService(
    IDbContextFactory<StudioDbContext> dbFactory,
    StudioEvents events,
    IOptions<StudioOptions> options,
    ILogger<MachineBenchmarkService> logger)
{
    private readonly Lock _lock = new();
    private Task<MachineBenchmarkDto>? _running;

    public bool IsRunning
    {
        get { lock (_lock) return _running is { IsCompleted: false }; }
    }

    /// <summary>Starts a measurement, or returns the one already under way.</summary>
    public Task<MachineBenchmarkDto> StartAsync(int? size = null)
    {
        lock (_lock)
        {
            if (_running is { IsCompleted: false }) return _running;
            int n = size ?? options.Value.BenchmarkMatrixSize;
            _running = Task.Factory.StartNew(() => Measure(n), CancellationToken.None,
                TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
            return _running;
        }
    }

    /// <summary>The newest stored measurement, or null when the machine was never measured.</summary>
    public async Task<MachineBenchmarkDto?> LatestAsync(CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        var record = await db.MachineBenchmarks.OrderByDescending(b => b.Id).FirstOrDefaultAsync(cancel);
        return record is null ? null : MachineBenchmarkDto.From(record);
    }

    public async Task<IReadOnlyList<MachineBenchmarkDto>> HistoryAsync(int take = 10, CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        var records = await db.MachineBenchmarks.OrderByDescending(b => b.Id).Take(take).ToListAsync(cancel);
        return records.Select(MachineBenchmarkDto.From).ToList();
    }

    private async Task<MachineBenchmarkDto> Measure(int size)
    {
        try
        {
            events.Publish(new BenchmarkProgress(0, "fp32"));
            var fp32 = MatmulBenchmark.Measure(torch.ScalarType.Float32, size,
                progress: new SyncProgress(f => events.Publish(new BenchmarkProgress(f * 0.5, "fp32"))));
            var bf16 = MatmulBenchmark.Measure(torch.ScalarType.BFloat16, size,
                progress: new SyncProgress(f => events.Publish(new BenchmarkProgress(0.5 + f * 0.5, "bf16"))));
            var info = TorchRuntime.Describe();
            var record = new MachineBenchmarkRecord
            {
                CreatedAt = DateTimeOffset.UtcNow,
                Size = size,
                Fp32Gflops = Math.Round(fp32.BestGflops, 1),
                Bf16Gflops = Math.Round(bf16.BestGflops, 1),
                Threads = info.Threads,
                CpuModel = info.CpuModel,
                LibTorchVersion = info.LibTorchVersion,
            };
            await using (var db = await dbFactory.CreateDbContextAsync())
            {
                db.MachineBenchmarks.Add(record);
                await db.SaveChangesAsync();
            }
            var dto = MachineBenchmarkDto.From(record);
            logger.LogInformation("Machine benchmark n={Size}: fp32 {Fp32} GFLOP/s, bf16 {Bf16} GFLOP/s", size, dto.Fp32Gflops, dto.Bf16Gflops);
            events.Publish(new BenchmarkCompleted(dto));
            return dto;
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Machine benchmark failed");
            events.Publish(new BenchmarkFailed(ex.Message));
            throw;
        }
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool out of order).</summary>
    private sealed class SyncProgress(Action<double> report) : IProgress<double>
    {
        public void Report(double value) => report(value);
    }
}
