using RlhfStudio.Data;
using RlhfStudio.Data.Entities;

namespace RlhfStudio.Web.Tests;

public class DownsamplingTests
{
    [Fact]
    public async Task A_long_series_is_reduced_to_max_points_keeping_its_extremes_and_ends()
    {
        var folder = StudioProcess.NewDataFolder();
        try
        {
            await StudioDatabase.InitializeAsync(folder);
            long runId;
            await using (var db = new StudioDbContext(StudioDatabase.Options(folder)))
            {
                var run = new RunRecord { Name = "d", Method = "sft", CreatedAt = DateTimeOffset.UtcNow };
                db.Runs.Add(run);
                await db.SaveChangesAsync();
                runId = run.Id;
            }
            var store = new MetricStore(StudioDatabase.ConnectionString(folder));
            var rng = new Random(3);
            var batch = Enumerable.Range(1, 50_000).Select(i => new MetricInput(runId, "loss", i, Math.Sin(i / 500.0) + rng.NextDouble() * 0.01, i)).ToList();
            batch[12_345] = batch[12_345] with { Value = 40 };   // a spike
            batch[33_333] = batch[33_333] with { Value = -40 };  // a dip
            await store.WriteAsync(batch);

            var points = await store.ReadDownsampledAsync(runId, "loss", long.MinValue, long.MaxValue, 500);
            Assert.InRange(points.Count, 100, 502);
            Assert.Equal(points.Select(p => p.Step).Order(), points.Select(p => p.Step));
            Assert.Contains(points, p => p.Step == 12_346 && p.Value == 40);
            Assert.Contains(points, p => p.Step == 33_334 && p.Value == -40);
            Assert.Equal(1, points[0].Step);
            Assert.Equal(50_000, points[^1].Step);

            var window = await store.ReadDownsampledAsync(runId, "loss", 1000, 1999, 500);
            Assert.All(window, p => Assert.InRange(p.Step, 1000, 1999));
            var small = await store.ReadDownsampledAsync(runId, "loss", 1, 100, 500);
            Assert.Equal(100, small.Count); // shorter than maxPoints: whole
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            StudioProcess.DeleteDataFolder(folder);
        }
    }
}
