using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Tests.Data;

namespace RlhfStudio.Engine.Tests.Trainers;

/// <summary>A tiny Llama (hidden 32, 2 layers) with the built-in tokenizer saved as a model folder, and small JSONL
/// datasets: what the trainer tests start from. Shared by the tests of a class.</summary>
public sealed class TrainerWorkspace : IDisposable
{
    private readonly DataFolder _data = new();

    public TrainerWorkspace()
    {
        var tokenizer = TextTokenizer.BuiltIn();
        var config = ModelConfig.Parse(new System.Text.Json.Nodes.JsonObject
        {
            ["model_type"] = "llama",
            ["architectures"] = new System.Text.Json.Nodes.JsonArray("LlamaForCausalLM"),
            ["vocab_size"] = tokenizer.VocabSize,
            ["hidden_size"] = 32,
            ["intermediate_size"] = 48,
            ["num_hidden_layers"] = 2,
            ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2,
            ["max_position_embeddings"] = 256,
            ["rms_norm_eps"] = 1e-6,
            ["tie_word_embeddings"] = false,
            ["bos_token_id"] = tokenizer.BosId,
            ["eos_token_id"] = tokenizer.EosId,
            ["pad_token_id"] = tokenizer.PadId,
        }, "tiny-test-config");
        using (var model = new CausalLanguageModel(config))
        {
            model.InitializeWeights(3);
            ModelSaver.Save(model, ModelFolder);
        }
        tokenizer.Save(ModelFolder);

        var rows = Enumerable.Range(0, 12).Select(i => new { prompt = $"What is {i} + {i + 3}?", completion = $"{2 * i + 3}" }).ToArray<object>();
        SftData = _data.Jsonl("sft.jsonl", rows);
        var pairs = Enumerable.Range(0, 12).Select(i => new
        {
            prompt = $"What is {i} + {i + 3}?",
            chosen = $"{2 * i + 3}",
            rejected = i % 2 == 0 ? "I do not know." : $"{2 * i + 9}",
            margin = 1.0 + i % 3,
        }).ToArray<object>();
        PreferenceData = _data.Jsonl("pairs.jsonl", pairs);
        PromptOnlyData = _data.Jsonl("prompts.jsonl", new { prompt = "What is 1 + 2?" }, new { prompt = "What is 2 + 2?" });
    }

    public string Root => _data.Path;
    public string ModelFolder => _data.File("tiny-model");
    public string SftData { get; }
    public string PreferenceData { get; }
    public string PromptOnlyData { get; }

    public SftSpec Sft(int maxSteps = 6, AdapterKind adapter = AdapterKind.Full, int saveSteps = 3, string? dataset = null, bool packing = false) => new()
    {
        Name = "test-sft",
        Model = ModelRef.FromPath(ModelFolder),
        Dataset = new DatasetRef { Path = dataset ?? SftData, EvalFraction = 0.25 },
        Seed = 11,
        MaxLength = 32,
        Packing = packing,
        Training = new TrainingSettings { LearningRate = 3e-3, WarmupRatio = 0, MaxSteps = maxSteps, BatchSize = 3 },
        Adapter = new AdapterSettings { Kind = adapter, Rank = 4, Alpha = 8, Dropout = 0.1, TargetModules = ["q_proj", "v_proj"], FrozenLayers = 1 },
        Checkpoints = new CheckpointSettings { LoggingSteps = 1, EvalSteps = 0, SaveSteps = saveSteps, KeepLast = 0 },
        Sampling = new SamplingSettings { MaxNewTokens = 4, Temperature = 0.7 },
        NumSamples = 2,
    };

    public RewardSpec Reward(int maxSteps = 6, AdapterKind adapter = AdapterKind.Full, int saveSteps = 3, string? model = null, string? dataset = null) => new()
    {
        Name = "test-reward",
        Model = ModelRef.FromPath(model ?? ModelFolder),
        Dataset = new DatasetRef { Path = dataset ?? PreferenceData, EvalFraction = 0.25 },
        Seed = 13,
        MaxLength = 32,
        UseMargin = true,
        CenterRewardsCoefficient = 0.01,
        Training = new TrainingSettings { LearningRate = 3e-3, WarmupRatio = 0, MaxSteps = maxSteps, BatchSize = 3 },
        Adapter = new AdapterSettings { Kind = adapter, Rank = 4, Alpha = 8, Dropout = 0.1, TargetModules = ["q_proj", "v_proj"] },
        Checkpoints = new CheckpointSettings { LoggingSteps = 1, EvalSteps = 0, SaveSteps = saveSteps, KeepLast = 0, BestMetric = MetricNames.EvalAccuracy, LowerIsBetter = false },
    };

    public void Dispose() => _data.Dispose();
}

/// <summary>Records what a job reports; cancels the run when a given step's metrics arrive.</summary>
internal sealed class JobRecorder : IRunReporter
{
    public CancellationTokenSource Cancellation { get; } = new();
    public long? CancelAfterStep { get; init; }
    public List<(long Step, IReadOnlyDictionary<string, double> Values)> MetricLog { get; } = [];
    public List<(long Step, IReadOnlyList<SampleRow> Rows)> SampleLog { get; } = [];
    public List<CheckpointReport> Checkpoints { get; } = [];
    public List<RunEvent> Events { get; } = [];

    public void Metrics(long step, IReadOnlyDictionary<string, double> values)
    {
        MetricLog.Add((step, values));
        if (step == CancelAfterStep) Cancellation.Cancel();
    }

    public void Samples(long step, IReadOnlyList<SampleRow> rows) => SampleLog.Add((step, rows));
    public void Checkpoint(CheckpointReport checkpoint) => Checkpoints.Add(checkpoint);
    public void Progress(RunProgress progress) { }
    public void Event(RunEvent runEvent) => Events.Add(runEvent);

    /// <summary>The last metrics reported at <paramref name="step"/>.</summary>
    public IReadOnlyDictionary<string, double> At(long step) => MetricLog.Last(m => m.Step == step).Values;

    public SortedDictionary<long, double> Series(string metric) =>
        new(MetricLog.Where(m => m.Values.ContainsKey(metric)).GroupBy(m => m.Step).ToDictionary(g => g.Key, g => g.Last().Values[metric]));

    public double Last(string metric) => MetricLog.Last(m => m.Values.ContainsKey(metric)).Values[metric];

    public static (RunOutcome Outcome, JobRecorder Reporter) Run(RunSpec spec, string output, string? resumeFrom = null, long? cancelAfterStep = null)
    {
        var reporter = new JobRecorder { CancelAfterStep = cancelAfterStep };
        var job = TrainingJobs.Create(spec);
        var outcome = job.Run(new RunContext(spec, output, reporter, reporter.Cancellation.Token, resumeFrom));
        return (outcome, reporter);
    }
}
