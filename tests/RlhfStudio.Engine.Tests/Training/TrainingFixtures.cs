using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Training;

/// <summary>Tests that train through the global torch RNG (dropout) run alone, so no other test draws from it meanwhile.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialTrainingCollection
{
    public const string Name = "serial training";
}

/// <summary>A tiny Llama on fixed rows of token ids: next-token cross-entropy summed over unmasked labels (row r masks
/// its first r % 3 labels, so rows carry different numbers of items), with dropout on the hidden states so that the
/// global RNG matters for exact resumption.</summary>
internal sealed class TinyLmTask : ITrainingTask<TinyLmTask.Batch>, IDisposable
{
    public sealed record Batch(Tensor Ids, Tensor Labels);

    public const int Rows = 6;
    public const int Length = 10;

    private readonly Tensor _ids;
    private readonly Tensor _labels;
    private int _lossCalls;

    public CausalLanguageModel Model { get; }
    public double Dropout { get; init; } = 0.1;
    /// <summary>1-based Loss calls that return NaN (to test the non-finite guard).</summary>
    public HashSet<int> NaNAtCall { get; } = [];
    public Func<long, IReadOnlyDictionary<string, double>?>? Eval { get; init; }
    public List<IReadOnlyList<int>> Collated { get; } = [];

    public TinyLmTask(long initSeed = 7)
    {
        Model = TestModels.RandomCausal(TestModels.Llama(), initSeed);
        _ids = TestModels.RandomIds(Rows, Length, seed: 11).DetachFromDisposeScope();
        var labels = _ids.clone();
        for (int r = 0; r < Rows; r++)
            for (int t = 0; t < r % 3; t++) labels[r, t + 1] = -100;
        _labels = labels.DetachFromDisposeScope();
        Parameters = ParameterGroups.Trainable(Model);
    }

    public int DatasetSize => Rows;
    public IReadOnlyList<NamedParameter> Parameters { get; }

    /// <summary>Label tokens counted by the loss in these rows.</summary>
    public long ItemsOf(IReadOnlyList<int> rows) => rows.Sum(r => Length - 1 - r % 3);

    public MicroBatch<Batch> Collate(IReadOnlyList<int> rows)
    {
        Collated.Add(rows);
        using var index = torch.tensor(rows.Select(r => (long)r).ToArray());
        return new MicroBatch<Batch>(new Batch(_ids.index_select(0, index), _labels.index_select(0, index)), ItemsOf(rows), rows.Count * Length);
    }

    public MicroBatchLoss Loss(Batch batch)
    {
        _lossCalls++;
        var hidden = nn.functional.dropout(Model.Hidden(batch.Ids), Dropout, training: Dropout > 0);
        var logits = Model.Logits(hidden).narrow(1, 0, Length - 1).reshape(-1, TestModels.Vocab);
        var targets = batch.Labels.narrow(1, 1, Length - 1).reshape(-1);
        var loss = nn.functional.cross_entropy(logits, targets, ignore_index: -100, reduction: nn.Reduction.Sum);
        var valid = targets.ne(-100);
        double correct = logits.argmax(-1).eq(targets).logical_and(valid).sum().item<long>();
        if (NaNAtCall.Contains(_lossCalls)) loss = loss * double.NaN;
        return new MicroBatchLoss(loss, new Dictionary<string, double> { [MetricNames.MeanTokenAccuracy] = correct });
    }

    public IReadOnlyDictionary<string, double>? Evaluate(long step) => Eval?.Invoke(step);

    // The dtype is passed because TransformerModel.DType makes a tensor wrapper per call that nothing disposes (a
    // finaliser frees it); the leak test below would count it.
    public void SaveModel(string folder) => ModelSaver.Save(Model, folder, ScalarType.Float32);
    public void LoadModel(string folder) => ModelLoader.LoadWeights(Model, folder);

    public void Dispose()
    {
        Model.Dispose();
        _ids.Dispose();
        _labels.Dispose();
    }
}

/// <summary>Records everything a job reports; can cancel the run when a given step's metrics arrive.</summary>
internal sealed class RecordingReporter : IRunReporter
{
    public CancellationTokenSource Cancellation { get; } = new();
    public long? CancelAfterStep { get; init; }
    public List<(long Step, IReadOnlyDictionary<string, double> Values)> MetricLog { get; } = [];
    public List<CheckpointReport> Checkpoints { get; } = [];
    public List<RunProgress> ProgressLog { get; } = [];
    public List<RunEvent> Events { get; } = [];

    public void Metrics(long step, IReadOnlyDictionary<string, double> values)
    {
        MetricLog.Add((step, values));
        if (step == CancelAfterStep) Cancellation.Cancel();
    }

    public void Samples(long step, IReadOnlyList<SampleRow> rows) { }
    public void Checkpoint(CheckpointReport checkpoint) => Checkpoints.Add(checkpoint);
    public void Progress(RunProgress progress) => ProgressLog.Add(progress);
    public void Event(RunEvent runEvent) => Events.Add(runEvent);

    /// <summary>train/loss by step.</summary>
    public SortedDictionary<long, double> Losses() =>
        new(MetricLog.Where(m => m.Values.ContainsKey(MetricNames.TrainLoss)).ToDictionary(m => m.Step, m => m.Values[MetricNames.TrainLoss]));
}

internal static class TrainingSpecs
{
    public static SftSpec Spec(int maxSteps = 10, int batchSize = 2, int accumulation = 2, int saveSteps = 5, int keepLast = 0,
        bool skipNonFinite = false, double learningRate = 3e-3, int loggingSteps = 1, int evalSteps = 0, double epochs = 1) => new()
    {
        Seed = 5,
        SkipNonFiniteLoss = skipNonFinite,
        Training = new TrainingSettings
        {
            LearningRate = learningRate,
            Schedule = LrSchedule.Cosine,
            WarmupRatio = 0.1,
            MaxSteps = maxSteps,
            Epochs = epochs,
            BatchSize = batchSize,
            GradientAccumulation = accumulation,
            MaxGradNorm = 1.0,
            WeightDecay = 0.1,
        },
        Checkpoints = new CheckpointSettings { LoggingSteps = loggingSteps, EvalSteps = evalSteps, SaveSteps = saveSteps, KeepLast = keepLast },
    };

    public static (RunOutcome Outcome, RecordingReporter Reporter) Run(TinyLmTask task, RunSpec spec, string output,
        string? resumeFrom = null, long? cancelAfterStep = null)
    {
        var reporter = new RecordingReporter { CancelAfterStep = cancelAfterStep };
        var context = new RunContext(spec, output, reporter, reporter.Cancellation.Token, resumeFrom);
        var outcome = new TrainingLoop<TinyLmTask.Batch>(context, task).Run();
        return (outcome, reporter);
    }
}
