using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Tests.Training;

public class IndexSamplerTests
{
    private static List<int[]> Take(IndexSampler s, int n) => Enumerable.Range(0, n).Select(_ => s.Next().ToArray()).ToList();

    [Fact]
    public void Each_epoch_is_a_seeded_permutation_of_every_row_and_epochs_differ()
    {
        var s = new IndexSampler(datasetSize: 10, batchSize: 3, seed: 42);
        Assert.Equal(4, s.BatchesPerEpoch);
        var epoch0 = Take(s, 4);
        Assert.Equal([3, 3, 3, 1], epoch0.Select(b => b.Length));
        Assert.Equal(Enumerable.Range(0, 10), epoch0.SelectMany(b => b).Order());
        Assert.Equal(new SamplerPosition(1, 0), s.Position);
        var epoch1 = Take(s, 4).SelectMany(b => b).ToArray();
        Assert.Equal(Enumerable.Range(0, 10), epoch1.Order());
        Assert.NotEqual(epoch0.SelectMany(b => b), epoch1);
        Assert.Equal(new IndexSampler(10, 3, 42).Order(1), epoch1);
        Assert.NotEqual(new IndexSampler(10, 3, 43).Order(0), s.Order(0));
    }

    [Fact]
    public void Restoring_a_position_continues_the_same_stream()
    {
        var straight = new IndexSampler(7, 2, seed: 1);
        var all = Take(straight, 11);
        var first = new IndexSampler(7, 2, seed: 1);
        Take(first, 6);
        var resumed = new IndexSampler(7, 2, seed: 1);
        resumed.Restore(first.Position);
        Assert.Equal(all.Skip(6), Take(resumed, 5));
    }

    [Fact]
    public void Drop_last_drops_the_partial_batch()
    {
        var s = new IndexSampler(10, 3, seed: 0, dropLast: true);
        Assert.Equal(3, s.BatchesPerEpoch);
        Assert.All(Take(s, 6), b => Assert.Equal(3, b.Length));
        Assert.Throws<ArgumentException>(() => new IndexSampler(2, 3, 0, dropLast: true));
    }

    [Fact]
    public void Without_shuffle_rows_come_in_order_and_epoch_progress_is_fractional()
    {
        var s = new IndexSampler(4, 2, seed: 0, shuffle: false);
        Assert.Equal([0, 1], s.Next());
        Assert.Equal(0.5, s.EpochProgress);
        Assert.Equal(1, s.RemainingInEpoch);
        Assert.Equal([2, 3], s.Next());
        Assert.Equal(1.0, s.EpochProgress);
    }

    [Fact]
    public void A_position_outside_the_epoch_is_refused() =>
        Assert.Throws<CheckpointException>(() => new IndexSampler(4, 2, 0).Restore(new SamplerPosition(0, 2)));
}
