using RlhfStudio.Data.Entities;

namespace RlhfStudio.Data.Tests;

public class MetricStoreTests
{
    private static async Task<(TempFolder Temp, MetricStore Store, long RunId)> NewStoreAsync()
    {
        var temp = new TempFolder();
        await StudioDatabase.InitializeAsync(temp.Path);
        await using var db = new StudioDbContext(StudioDatabase.Options(temp.Path));
        var run = new RunRecord { Name = "m", Method = "sft", CreatedAt = DateTimeOffset.UtcNow };
        db.Runs.Add(run);
        await db.SaveChangesAsync();
        return (temp, new MetricStore(StudioDatabase.ConnectionString(temp.Path)), run.Id);
    }

    [Fact]
    public async Task A_batch_of_thousands_of_points_is_written_and_read_back_in_step_order()
    {
        var (temp, store, runId) = await NewStoreAsync();
        using var _ = temp;
        var batch = new List<MetricInput>();
        for (int step = 5000; step >= 1; step--) // out of order on purpose
        {
            batch.Add(new MetricInput(runId, "train/loss", step, 10.0 / step, 1000 + step));
            batch.Add(new MetricInput(runId, "train/learning_rate", step, 1e-4, 1000 + step));
        }
        Assert.Equal(10_000, await store.WriteAsync(batch));

        var loss = await store.ReadAsync(runId, "train/loss");
        Assert.Equal(5000, loss.Count);
        Assert.Equal(Enumerable.Range(1, 5000).Select(i => (long)i), loss.Select(p => p.Step));
        Assert.Equal(10.0 / 42, loss[41].Value, 12);
        Assert.Equal(1042, loss[41].TimeMs);
        Assert.Equal(["train/learning_rate", "train/loss"], await store.SeriesNamesAsync(runId));
    }

    [Fact]
    public async Task A_step_reported_again_replaces_the_stored_point_instead_of_duplicating_it()
    {
        var (temp, store, runId) = await NewStoreAsync();
        using var _ = temp;
        await store.WriteAsync([new MetricInput(runId, "train/loss", 1, 3.0, 1), new MetricInput(runId, "train/loss", 2, 2.5, 2)]);
        // a resumed run re-reports step 2 and continues
        await store.WriteAsync([new MetricInput(runId, "train/loss", 2, 2.4, 3), new MetricInput(runId, "train/loss", 3, 2.0, 4)]);

        var points = await store.ReadAsync(runId, "train/loss");
        Assert.Equal([1L, 2L, 3L], points.Select(p => p.Step));
        Assert.Equal(2.4, points[1].Value);
    }

    [Fact]
    public async Task Range_queries_return_only_the_steps_asked_for()
    {
        var (temp, store, runId) = await NewStoreAsync();
        using var _ = temp;
        await store.WriteAsync(Enumerable.Range(0, 100).Select(i => new MetricInput(runId, "x", i, i, i)).ToList());
        var points = await store.ReadAsync(runId, "x", from: 10, to: 19);
        Assert.Equal(Enumerable.Range(10, 10).Select(i => (long)i), points.Select(p => p.Step));
    }

    [Fact]
    public async Task Non_finite_values_are_not_stored()
    {
        var (temp, store, runId) = await NewStoreAsync();
        using var _ = temp;
        int written = await store.WriteAsync([new MetricInput(runId, "x", 1, double.NaN, 0), new MetricInput(runId, "x", 2, 1.0, 0),
            new MetricInput(runId, "x", 3, double.PositiveInfinity, 0)]);
        Assert.Equal(1, written);
        Assert.Single(await store.ReadAsync(runId, "x"));
    }
}
