using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Components.Launch;

/// <summary>The New run form's state: a <see cref="RunSpec"/> that every field reads and replaces (records with
/// <c>with</c>), so the form, the advanced JSON editor, cloning and the API all describe the same record and share
/// its validation. Fields that do not apply to the current method read as defaults and ignore writes.</summary>
public sealed class RunForm
{
    public RunSpec Spec { get; set; }

    public RunForm(RunSpec? spec = null) => Spec = spec ?? new SftSpec();

    public static RunSpec DefaultSpec(TrainingMethod method) => method switch
    {
        TrainingMethod.Sft => new SftSpec(),
        TrainingMethod.Reward => new RewardSpec(),
        TrainingMethod.Ppo => new PpoSpec(),
        TrainingMethod.Rloo => new RlooSpec(),
        _ => new DpoSpec(),
    };

    /// <summary>Switching method keeps what every method shares (name, model, data, precision, length, adapters) and
    /// takes the new method's own defaults for optimisation, sampling and checkpoints (they differ per method in TRL).</summary>
    public TrainingMethod Method
    {
        get => Spec.Method;
        set
        {
            if (value == Spec.Method) return;
            var s = DefaultSpec(value);
            Spec = s with
            {
                Name = Spec.Name, Model = Spec.Model, Dataset = Spec.Dataset, Device = Spec.Device, Precision = Spec.Precision,
                Seed = Spec.Seed, MaxLength = Spec.MaxLength, Template = Spec.Template, Adapter = Spec.Adapter,
            };
        }
    }

    // ---- shared -----------------------------------------------------------------------------
    public string Name { get => Spec.Name; set => Spec = Spec with { Name = value }; }
    public ModelRef Model { get => Spec.Model; set => Spec = Spec with { Model = value }; }
    public DatasetRef Dataset { get => Spec.Dataset; set => Spec = Spec with { Dataset = value }; }
    public int? MaxRows { get => Spec.Dataset.MaxRows; set => Spec = Spec with { Dataset = Spec.Dataset with { MaxRows = value } }; }
    public Precision Precision { get => Spec.Precision; set => Spec = Spec with { Precision = value }; }
    public int Seed { get => Spec.Seed; set => Spec = Spec with { Seed = value }; }
    public int MaxLength { get => Spec.MaxLength; set => Spec = Spec with { MaxLength = value }; }
    public string? Template { get => Spec.Template; set => Spec = Spec with { Template = string.IsNullOrEmpty(value) ? null : value }; }

    public double LearningRate { get => Spec.Training.LearningRate; set => Spec = Spec with { Training = Spec.Training with { LearningRate = value } }; }
    public LrSchedule Schedule { get => Spec.Training.Schedule; set => Spec = Spec with { Training = Spec.Training with { Schedule = value } }; }
    public double WarmupRatio { get => Spec.Training.WarmupRatio; set => Spec = Spec with { Training = Spec.Training with { WarmupRatio = value } }; }
    public int MaxSteps { get => Spec.Training.MaxSteps; set => Spec = Spec with { Training = Spec.Training with { MaxSteps = value } }; }
    public double Epochs { get => Spec.Training.Epochs; set => Spec = Spec with { Training = Spec.Training with { Epochs = value } }; }
    public int BatchSize { get => Spec.Training.BatchSize; set => Spec = Spec with { Training = Spec.Training with { BatchSize = value } }; }
    public int GradientAccumulation { get => Spec.Training.GradientAccumulation; set => Spec = Spec with { Training = Spec.Training with { GradientAccumulation = value } }; }
    public double WeightDecay { get => Spec.Training.WeightDecay; set => Spec = Spec with { Training = Spec.Training with { WeightDecay = value } }; }

    public int LoggingSteps { get => Spec.Checkpoints.LoggingSteps; set => Spec = Spec with { Checkpoints = Spec.Checkpoints with { LoggingSteps = value } }; }
    public int EvalSteps { get => Spec.Checkpoints.EvalSteps; set => Spec = Spec with { Checkpoints = Spec.Checkpoints with { EvalSteps = value } }; }
    public int SaveSteps { get => Spec.Checkpoints.SaveSteps; set => Spec = Spec with { Checkpoints = Spec.Checkpoints with { SaveSteps = value } }; }
    public int KeepLast { get => Spec.Checkpoints.KeepLast; set => Spec = Spec with { Checkpoints = Spec.Checkpoints with { KeepLast = value } }; }

    public int MaxNewTokens { get => Spec.Sampling.MaxNewTokens; set => Spec = Spec with { Sampling = Spec.Sampling with { MaxNewTokens = value } }; }
    public double Temperature { get => Spec.Sampling.Temperature; set => Spec = Spec with { Sampling = Spec.Sampling with { Temperature = value } }; }

    public AdapterKind AdapterKind { get => Spec.Adapter.Kind; set => Spec = Spec with { Adapter = Spec.Adapter with { Kind = value } }; }
    public int LoraRank { get => Spec.Adapter.Rank; set => Spec = Spec with { Adapter = Spec.Adapter with { Rank = value } }; }
    public double LoraAlpha { get => Spec.Adapter.Alpha; set => Spec = Spec with { Adapter = Spec.Adapter with { Alpha = value } }; }
    public double LoraDropout { get => Spec.Adapter.Dropout; set => Spec = Spec with { Adapter = Spec.Adapter with { Dropout = value } }; }
    /// <summary>Target modules as a comma-separated list.</summary>
    public string TargetModules
    {
        get => string.Join(", ", Spec.Adapter.TargetModules);
        set => Spec = Spec with { Adapter = Spec.Adapter with { TargetModules = value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries) } };
    }
    public int FrozenLayers { get => Spec.Adapter.FrozenLayers; set => Spec = Spec with { Adapter = Spec.Adapter with { FrozenLayers = value } }; }

    // ---- SFT --------------------------------------------------------------------------------
    public bool Packing { get => (Spec as SftSpec)?.Packing ?? false; set { if (Spec is SftSpec s) Spec = s with { Packing = value }; } }
    public bool CompletionOnlyLoss { get => (Spec as SftSpec)?.CompletionOnlyLoss ?? true; set { if (Spec is SftSpec s) Spec = s with { CompletionOnlyLoss = value }; } }
    public int NumSamples { get => (Spec as SftSpec)?.NumSamples ?? 0; set { if (Spec is SftSpec s) Spec = s with { NumSamples = value }; } }

    // ---- reward -----------------------------------------------------------------------------
    public bool UseMargin { get => (Spec as RewardSpec)?.UseMargin ?? false; set { if (Spec is RewardSpec s) Spec = s with { UseMargin = value }; } }
    public double CenterRewardsCoefficient { get => (Spec as RewardSpec)?.CenterRewardsCoefficient ?? 0; set { if (Spec is RewardSpec s) Spec = s with { CenterRewardsCoefficient = value }; } }

    // ---- PPO / RLOO -------------------------------------------------------------------------
    public bool IsRl => Spec is RlSpec;
    public RewardSource Reward { get => (Spec as RlSpec)?.Reward ?? new RewardSource { Builtin = "arithmetic" }; set { if (Spec is RlSpec s) Spec = s with { Reward = value }; } }
    public double KlCoef { get => (Spec as RlSpec)?.KlCoef ?? 0; set { if (Spec is RlSpec s) Spec = s with { KlCoef = value }; } }
    public int NumPpoEpochs { get => (Spec as RlSpec)?.NumPpoEpochs ?? 1; set { if (Spec is RlSpec s) Spec = s with { NumPpoEpochs = value }; } }
    public int NumMiniBatches { get => (Spec as RlSpec)?.NumMiniBatches ?? 1; set { if (Spec is RlSpec s) Spec = s with { NumMiniBatches = value }; } }
    public double ClipRange { get => (Spec as RlSpec)?.ClipRange ?? 0.2; set { if (Spec is RlSpec s) Spec = s with { ClipRange = value }; } }
    public double? MissingEosPenalty { get => (Spec as RlSpec)?.MissingEosPenalty; set { if (Spec is RlSpec s) Spec = s with { MissingEosPenalty = value }; } }
    public bool RecomputeLogProbs { get => (Spec as RlSpec)?.RecomputeLogProbs ?? true; set { if (Spec is RlSpec s) Spec = s with { RecomputeLogProbs = value }; } }
    public int FreezeActorSteps { get => (Spec as PpoSpec)?.FreezeActorSteps ?? 0; set { if (Spec is PpoSpec s) Spec = s with { FreezeActorSteps = value }; } }
    public bool SharedValueHead { get => (Spec as PpoSpec)?.SharedValueHead ?? false; set { if (Spec is PpoSpec s) Spec = s with { SharedValueHead = value }; } }
    public double VfCoef { get => (Spec as PpoSpec)?.VfCoef ?? 0; set { if (Spec is PpoSpec s) Spec = s with { VfCoef = value }; } }
    public double Gamma { get => (Spec as PpoSpec)?.Gamma ?? 1; set { if (Spec is PpoSpec s) Spec = s with { Gamma = value }; } }
    public double Lam { get => (Spec as PpoSpec)?.Lam ?? 0.95; set { if (Spec is PpoSpec s) Spec = s with { Lam = value }; } }
    public bool AdaptiveKl { get => (Spec as PpoSpec)?.AdaptiveKl ?? false; set { if (Spec is PpoSpec s) Spec = s with { AdaptiveKl = value }; } }
    public double TargetKl { get => (Spec as PpoSpec)?.TargetKl ?? 6; set { if (Spec is PpoSpec s) Spec = s with { TargetKl = value }; } }
    public int RlooK { get => (Spec as RlooSpec)?.RlooK ?? 4; set { if (Spec is RlooSpec s) Spec = s with { RlooK = value }; } }

    // ---- DPO --------------------------------------------------------------------------------
    public double Beta { get => (Spec as DpoSpec)?.Beta ?? 0.1; set { if (Spec is DpoSpec s) Spec = s with { Beta = value }; } }
    public double LabelSmoothing { get => (Spec as DpoSpec)?.LabelSmoothing ?? 0; set { if (Spec is DpoSpec s) Spec = s with { LabelSmoothing = value }; } }
    public double? RpoAlpha { get => (Spec as DpoSpec)?.RpoAlpha; set { if (Spec is DpoSpec s) Spec = s with { RpoAlpha = value }; } }
    public int MaxPromptLength { get => (Spec as DpoSpec)?.MaxPromptLength ?? 128; set { if (Spec is DpoSpec s) Spec = s with { MaxPromptLength = value }; } }

    // ---- validation -------------------------------------------------------------------------
    public IReadOnlyList<SpecError> Validate() => Spec.Validate();

    /// <summary>Errors of one field (its JSON path) or of anything under it.</summary>
    public static IEnumerable<SpecError> For(IEnumerable<SpecError> errors, string field) =>
        errors.Where(e => e.Field == field || e.Field.StartsWith(field + ".", StringComparison.Ordinal) || e.Field.StartsWith(field + "[", StringComparison.Ordinal));

    /// <summary>Parses the advanced editor's JSON: the spec, or every problem (JSON syntax, unknown field, invalid value).</summary>
    public static (RunSpec? Spec, IReadOnlyList<SpecError> Errors) Parse(string json)
    {
        try { return (RunSpec.FromJson(json), []); }
        catch (RunSpecException e) { return (null, e.Errors); }
    }

    /// <summary>A clone of an earlier run's spec as a new run: same settings, "(copy)" name, pipeline stage references kept.</summary>
    public static RunSpec CloneOf(RunSpec spec) => spec with { Name = string.IsNullOrEmpty(spec.Name) ? "" : spec.Name + " (copy)" };
}
