using static TorchSharp.torch;

namespace RlhfStudio.Engine.Training;

/// <summary>Where a sampler is: the epoch (0-based) and how many batches of that epoch have been handed out.</summary>
public sealed record SamplerPosition(long Epoch, int BatchIndex);

/// <summary>Batches of row indices over a map-style dataset, reshuffled every epoch and resumable. The order of
/// epoch <c>e</c> is <c>torch.randperm(n)</c> from a generator seeded with <c>seed + e</c>, which is what
/// accelerate's SeedableRandomSampler (used by transformers' Trainer) draws, so a run's data order depends only on
/// the seed and the position, never on what ran before: restoring <see cref="Position"/> restores the stream.</summary>
public sealed class IndexSampler
{
    private int[]? _order;
    private long _orderEpoch = -1;

    public int DatasetSize { get; }
    public int BatchSize { get; }
    public long Seed { get; }
    public bool Shuffle { get; }
    /// <summary>Drop the last, smaller batch of each epoch (dataloader_drop_last); by default it is kept.</summary>
    public bool DropLast { get; }
    public int BatchesPerEpoch { get; }
    public SamplerPosition Position { get; private set; } = new(0, 0);

    public IndexSampler(int datasetSize, int batchSize, long seed, bool shuffle = true, bool dropLast = false)
    {
        if (datasetSize < 1) throw new ArgumentOutOfRangeException(nameof(datasetSize), datasetSize, "the dataset has no rows");
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "must be at least 1");
        if (dropLast && datasetSize < batchSize)
            throw new ArgumentException($"the dataset has {datasetSize} rows, fewer than one batch of {batchSize}, and the last partial batch is dropped: no batches", nameof(datasetSize));
        DatasetSize = datasetSize;
        BatchSize = batchSize;
        Seed = seed;
        Shuffle = shuffle;
        DropLast = dropLast;
        BatchesPerEpoch = dropLast ? datasetSize / batchSize : (datasetSize + batchSize - 1) / batchSize;
    }

    /// <summary>Batches left in the current epoch.</summary>
    public int RemainingInEpoch => BatchesPerEpoch - Position.BatchIndex;

    /// <summary>Epochs completed, as a fraction (transformers' logged <c>epoch</c>).</summary>
    public double EpochProgress => Position.Epoch + (double)Position.BatchIndex / BatchesPerEpoch;

    /// <summary>The order of every row in epoch <paramref name="epoch"/>.</summary>
    public int[] Order(long epoch)
    {
        if (!Shuffle) return Enumerable.Range(0, DatasetSize).ToArray();
        using var generator = new Generator(unchecked((ulong)(Seed + epoch)));
        using var perm = randperm(DatasetSize, generator: generator);
        return perm.data<long>().Select(i => (int)i).ToArray();
    }

    /// <summary>The next batch; moves to the next epoch after the last batch of this one.</summary>
    public IReadOnlyList<int> Next()
    {
        if (_orderEpoch != Position.Epoch)
        {
            _order = Order(Position.Epoch);
            _orderEpoch = Position.Epoch;
        }
        int start = Position.BatchIndex * BatchSize;
        var batch = _order!.AsSpan(start, Math.Min(BatchSize, DatasetSize - start)).ToArray();
        Position = Position.BatchIndex + 1 >= BatchesPerEpoch ? new(Position.Epoch + 1, 0) : Position with { BatchIndex = Position.BatchIndex + 1 };
        return batch;
    }

    /// <summary>Continues from <paramref name="position"/> (as saved in a checkpoint).</summary>
    public void Restore(SamplerPosition position)
    {
        if (position.Epoch < 0 || position.BatchIndex < 0 || position.BatchIndex >= BatchesPerEpoch)
            throw new CheckpointException($"sampler position (epoch {position.Epoch}, batch {position.BatchIndex}) is outside an epoch of {BatchesPerEpoch} batches");
        Position = position;
    }
}
