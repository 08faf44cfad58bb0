using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Trainers;
using RlhfStudio.Engine.Trainers;
using RlhfStudio.Engine.Trainers.Dpo;

namespace RlhfStudio.Engine.Tests.Dpo;

/// <summary>DPO specs on the trainer workspace's tiny Llama and its 12 preference pairs (9 train, 3 eval).</summary>
internal static class DpoTestKit
{
    public static DpoSpec Dpo(this TrainerWorkspace w, int maxSteps = 6, AdapterKind adapter = AdapterKind.Full, int saveSteps = 3,
        bool precompute = false, int batchSize = 3, double learningRate = 3e-3, Precision precision = Precision.Bf16) => new()
    {
        Name = "test-dpo",
        Model = ModelRef.FromPath(w.ModelFolder),
        Dataset = new DatasetRef { Path = w.PreferenceData, EvalFraction = 0.25 },
        Seed = 17,
        MaxLength = 32,
        MaxPromptLength = 24,
        Beta = 0.1,
        PrecomputeReferenceLogProbs = precompute,
        Precision = precision,
        Training = new TrainingSettings { LearningRate = learningRate, WarmupRatio = 0, MaxSteps = maxSteps, BatchSize = batchSize },
        Adapter = new AdapterSettings { Kind = adapter, Rank = 4, Alpha = 8, Dropout = 0.1, TargetModules = ["q_proj", "v_proj"] },
        Checkpoints = new CheckpointSettings { LoggingSteps = 1, EvalSteps = 0, SaveSteps = saveSteps, KeepLast = 0, BestMetric = MetricNames.RewardsAccuracies, LowerIsBetter = false },
        Sampling = new SamplingSettings { MaxNewTokens = 4, Temperature = 0.7 },
    };

    /// <summary>The policy and reference of <paramref name="spec"/> and its tokenised training pairs, without running a job.</summary>
    public static (TrainableModel<CausalLanguageModel> Setup, DpoReference Reference, List<DpoPair> Pairs) Build(DpoSpec spec)
    {
        var setup = ModelSetup.ForCausalLm(spec);
        var reference = DpoReference.Create(spec, setup);
        var dataset = Dataset.Open(spec.Dataset, TrainingMethod.Dpo, spec.Seed);
        var (train, _) = DpoData.TokenizeAll(dataset.Examples(DatasetPart.Train), setup.Tokenizer, setup.Template, spec.MaxPromptLength, spec.MaxLength);
        return (setup, reference, train.Select(p => p.Pair).ToList());
    }
}
