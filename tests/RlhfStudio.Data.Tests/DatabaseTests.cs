using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using RlhfStudio.Data.Entities;

namespace RlhfStudio.Data.Tests;

public class DatabaseTests
{
    [Fact]
    public async Task Initialize_creates_the_database_from_migrations_in_an_empty_folder_in_wal_mode()
    {
        using var temp = new TempFolder();
        var folder = Path.Combine(temp.Path, "nested", "data");
        Assert.False(Directory.Exists(folder));

        await StudioDatabase.InitializeAsync(folder);

        Assert.True(File.Exists(Path.Combine(folder, StudioDatabase.FileName)));
        Assert.Equal("wal", await StudioDatabase.JournalModeAsync(folder));
        await using var db = new StudioDbContext(StudioDatabase.Options(folder));
        Assert.Empty(await db.Database.GetPendingMigrationsAsync());
        Assert.NotEmpty(await db.Database.GetAppliedMigrationsAsync());
        var tables = await db.Database.SqlQueryRaw<string>("SELECT name AS Value FROM sqlite_master WHERE type = 'table'").ToListAsync();
        foreach (var t in new[] { "runs", "metric_series", "metric_points", "samples", "checkpoints", "run_events", "datasets", "models", "machine_benchmarks" })
            Assert.Contains(t, tables);
    }

    [Fact]
    public async Task Initialize_twice_keeps_existing_records()
    {
        using var temp = new TempFolder();
        await StudioDatabase.InitializeAsync(temp.Path);
        await using (var db = new StudioDbContext(StudioDatabase.Options(temp.Path)))
        {
            db.Runs.Add(new RunRecord { Name = "kept", Method = "sft", CreatedAt = DateTimeOffset.UtcNow });
            await db.SaveChangesAsync();
        }
        await StudioDatabase.InitializeAsync(temp.Path);
        await using var again = new StudioDbContext(StudioDatabase.Options(temp.Path));
        Assert.Equal("kept", (await again.Runs.SingleAsync()).Name);
    }

    [Fact]
    public async Task Run_round_trips_status_and_times_and_deleting_it_cascades_to_its_records()
    {
        using var temp = new TempFolder();
        await StudioDatabase.InitializeAsync(temp.Path);
        var created = new DateTimeOffset(2026, 11, 22, 10, 0, 0, TimeSpan.Zero);
        long runId;
        await using (var db = new StudioDbContext(StudioDatabase.Options(temp.Path)))
        {
            var run = new RunRecord { Name = "r", Method = "ppo", Status = RunStatus.Running, SpecJson = "{\"method\":\"ppo\"}", CreatedAt = created };
            db.Runs.Add(run);
            await db.SaveChangesAsync();
            runId = run.Id;
            db.Samples.Add(new SampleRecord { RunId = runId, Step = 5, Prompt = "p", Completion = "c", Score = 1.5, CreatedAt = created });
            db.Checkpoints.Add(new CheckpointRecord { RunId = runId, Step = 5, Path = "/x/checkpoint-5", CreatedAt = created });
            db.RunEvents.Add(new RunEventRecord { RunId = runId, Time = created, Level = "Warning", Code = "kl-negative", Message = "KL < 0" });
            await db.SaveChangesAsync();
        }
        var store = new MetricStore(StudioDatabase.ConnectionString(temp.Path));
        await store.WriteAsync([new MetricInput(runId, "train/loss", 1, 2.0, 0)]);

        await using (var db = new StudioDbContext(StudioDatabase.Options(temp.Path)))
        {
            var run = await db.Runs.SingleAsync();
            Assert.Equal(RunStatus.Running, run.Status);
            Assert.Equal(created, run.CreatedAt);
            db.Runs.Remove(run);
            await db.SaveChangesAsync();
            Assert.Equal(0, await db.Samples.CountAsync());
            Assert.Equal(0, await db.Checkpoints.CountAsync());
            Assert.Equal(0, await db.RunEvents.CountAsync());
            Assert.Equal(0, await db.MetricSeries.CountAsync());
            Assert.Equal(0, await db.MetricPoints.CountAsync());
        }
    }

    [Fact]
    public async Task Status_is_stored_as_text()
    {
        using var temp = new TempFolder();
        await StudioDatabase.InitializeAsync(temp.Path);
        await using (var db = new StudioDbContext(StudioDatabase.Options(temp.Path)))
        {
            db.Runs.Add(new RunRecord { Name = "r", Method = "sft", Status = RunStatus.Interrupted, CreatedAt = DateTimeOffset.UtcNow });
            await db.SaveChangesAsync();
        }
        await using var connection = new SqliteConnection(StudioDatabase.ConnectionString(temp.Path));
        await connection.OpenAsync();
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT Status FROM runs";
        Assert.Equal("Interrupted", await cmd.ExecuteScalarAsync());
    }
}
