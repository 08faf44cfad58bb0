using System.Text.Json;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Training;

/// <summary>One logged line of metrics (transformers' <c>log_history</c> entry).</summary>
public sealed record LogEntry(long Step, IReadOnlyDictionary<string, double> Values);

/// <summary>The sampler's state in a checkpoint: enough to rebuild the same stream of batches, plus what it was
/// built for, so a resume over a different dataset or batch size is refused rather than silently misaligned.</summary>
public sealed record SamplerState(long Epoch, int BatchIndex, long Seed, int DatasetSize, int BatchSize, bool DropLast, bool Shuffle);

/// <summary>The learning-rate schedule in a checkpoint (LambdaLR's state: the shape and the steps taken).</summary>
public sealed record SchedulerState(LrSchedule Kind, double PeakLearningRate, long TotalSteps, long WarmupSteps, long LastStep);

/// <summary><c>trainer_state.json</c>: where training is, written into every checkpoint.</summary>
public sealed record TrainerState
{
    public const string FileName = "trainer_state.json";
    /// <summary>How many recent log lines a checkpoint keeps (the host keeps the full history).</summary>
    public const int LogHistoryTail = 100;

    public int Format { get; init; } = 1;
    /// <summary>Optimisation steps completed.</summary>
    public long GlobalStep { get; init; }
    public long TotalSteps { get; init; }
    /// <summary>Epochs completed, fractional.</summary>
    public double Epoch { get; init; }
    /// <summary>Tokens processed so far (training micro-batches).</summary>
    public long TokensSeen { get; init; }
    public required SamplerState Sampler { get; init; }
    /// <summary>The metric that picks the best checkpoint, its value at this checkpoint (the latest reported at or
    /// before this step; null when not reported yet), and the best value and checkpoint seen so far.</summary>
    public string BestMetricName { get; init; } = MetricNames.EvalLoss;
    public double? Metric { get; init; }
    public double? BestMetric { get; init; }
    public string? BestModelCheckpoint { get; init; }
    public IReadOnlyList<LogEntry> LogHistory { get; init; } = [];

    public void Save(string folder) =>
        File.WriteAllText(Path.Combine(folder, FileName), JsonSerializer.Serialize(this, CheckpointJson.Options));

    public static TrainerState Load(string folder)
    {
        var path = Path.Combine(folder, FileName);
        try
        {
            return JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), CheckpointJson.Options)
                ?? throw new CheckpointException($"{path}: empty trainer state");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot read the trainer state: {e.Message}", e);
        }
    }
}

/// <summary><c>scheduler.json</c> and <c>rng_state.bin</c>: the learning-rate schedule and the global torch RNG.</summary>
public static class RunStateFiles
{
    public const string SchedulerFileName = "scheduler.json";
    public const string RngFileName = "rng_state.bin";

    public static string SaveScheduler(string folder, LearningRateSchedule schedule, long lastStep)
    {
        var path = Path.Combine(folder, SchedulerFileName);
        var state = new SchedulerState(schedule.Kind, schedule.PeakLearningRate, schedule.TotalSteps, schedule.WarmupSteps, lastStep);
        File.WriteAllText(path, JsonSerializer.Serialize(state, CheckpointJson.Options));
        return path;
    }

    public static SchedulerState LoadScheduler(string folder)
    {
        var path = Path.Combine(folder, SchedulerFileName);
        try
        {
            return JsonSerializer.Deserialize<SchedulerState>(File.ReadAllText(path), CheckpointJson.Options)
                ?? throw new CheckpointException($"{path}: empty scheduler state");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot read the scheduler state: {e.Message}", e);
        }
    }

    /// <summary>Saves the state of torch's default CPU generator (dropout and every other draw without an explicit
    /// generator), as transformers saves <c>rng_state.pth</c>.</summary>
    public static string SaveRng(string folder)
    {
        var path = Path.Combine(folder, RngFileName);
        using var state = TorchSharp.torch.random.get_rng_state();
        File.WriteAllBytes(path, state.bytes.ToArray());
        return path;
    }

    public static void LoadRng(string folder)
    {
        var path = Path.Combine(folder, RngFileName);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot read the random generator state: {e.Message}", e);
        }
        using var current = TorchSharp.torch.random.get_rng_state();
        if (bytes.Length != current.numel())
            throw new CheckpointException($"{path}: random generator state has {bytes.Length} bytes, this libtorch's has {current.numel()}");
        using var state = TorchSharp.torch.tensor(bytes, dtype: TorchSharp.torch.ScalarType.Byte);
        TorchSharp.torch.random.set_rng_state(state);
    }
}
