using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers;
using RlhfStudio.Engine.Trainers.Rl;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Rl;

/// <summary>Very small models over the built-in tokenizer, the arithmetic scorer and arithmetic prompts.</summary>
internal static class RlTestKit
{
    public static readonly TextTokenizer Tokenizer = TextTokenizer.BuiltIn();

    public static ModelConfig Config() => ModelPresets.Config("tiny", Tokenizer.VocabSize, Tokenizer.BosId, [Tokenizer.EosId!.Value], Tokenizer.PadId) with
    {
        HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 8,
    };

    public static CausalLanguageModel Policy(long seed = 3)
    {
        var model = new CausalLanguageModel(Config());
        model.InitializeWeights(seed);
        return model;
    }

    public static ScoreModel Value(long seed = 3)
    {
        var config = Config() with { NumLabels = 1, Architectures = ["LlamaForSequenceClassification"] };
        var model = new ScoreModel(config);
        model.InitializeWeights(seed);
        return model;
    }

    /// <summary>Policy (LoRA with B = 0, or full with a frozen identical copy as reference), value model (or a value head
    /// on the policy), and the arithmetic scorer unless another is given.</summary>
    public static RlModels Models(bool lora, bool withValue = true, long seed = 3, bool sharedValueHead = false, ISequenceScorer? scorer = null,
        ScalarType? computeDType = null)
    {
        var policy = Policy(seed);
        CausalLanguageModel? reference = null;
        if (lora) Lora.Apply(policy, new LoraConfig { Rank = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"] }, seed);
        else reference = Policy(seed);
        policy.ComputeDType = computeDType;
        if (reference is not null) reference.ComputeDType = computeDType;
        ScoreModel? value = null;
        if (withValue && !sharedValueHead)
        {
            value = Value(seed);
            if (lora) Lora.Apply(value, new LoraConfig { Rank = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"] }, seed + 1);
        }
        var kind = lora ? AdapterKind.Lora : AdapterKind.Full;
        var policyPart = new TrainableModel<CausalLanguageModel>(policy, Tokenizer, PromptTemplates.StackLlama, CPU, kind, "test");
        var valuePart = value is null ? null : new TrainableModel<ScoreModel>(value, Tokenizer, PromptTemplates.StackLlama, CPU, kind, "test");
        if (value is not null) value.ComputeDType = computeDType;
        var head = sharedValueHead ? new ValueHead(Config().HiddenSize, computeDType, CPU) : null;
        return new RlModels(policyPart, reference, valuePart, scorer ?? BuiltinScorer.Named("arithmetic")!, valueHead: head);
    }

    public static IReadOnlyList<RlPrompt> Prompts(int count, int seed = 1) =>
        ArithmeticTask.Draw(new Random(seed), test: false).Take(count)
            .Select(q => new RlPrompt(q.Question, PromptTemplates.StackLlama.TokenizePrompt(Tokenizer, q.Question))).ToList();

    public static RolloutSettings Settings(int maxNewTokens = 6, int forwardBatch = 2, double? missingEosPenalty = null) =>
        new(0.7, maxNewTokens, [Tokenizer.EosId!.Value], Tokenizer.PadId!.Value, forwardBatch, missingEosPenalty);

    public static PpoSpec PpoSpec(int maxSteps = 3, int batch = 4, AdapterKind adapter = AdapterKind.Lora, int epochs = 2, int miniBatches = 2) => new()
    {
        Model = ModelRef.FromPreset("tiny"),
        Dataset = new DatasetRef { Builtin = "arithmetic", MaxRows = 64 },
        Precision = Precision.Fp32,
        Seed = 5,
        MaxLength = 64,
        Training = new TrainingSettings { LearningRate = 1e-3, BatchSize = batch, MaxSteps = maxSteps, Schedule = LrSchedule.Linear, WarmupRatio = 0 },
        Adapter = new AdapterSettings { Kind = adapter, Rank = 4, Alpha = 8, Dropout = 0 },
        Sampling = new SamplingSettings { Temperature = 0.7, MaxNewTokens = 6 },
        Checkpoints = new CheckpointSettings { SaveSteps = 2, KeepLast = 0, BestMetric = MetricNames.ObjectiveScores, LowerIsBetter = false },
        NumPpoEpochs = epochs,
        NumMiniBatches = miniBatches,
        SampleSteps = 2,
    };
}
