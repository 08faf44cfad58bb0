// One spec per training method, over the shared RunSpec settings. Defaults follow TRL's configs.
namespace RlhfStudio.Engine.Jobs;

/// <summary>Supervised fine-tuning (TRL SFTConfig).</summary>
public sealed record SftSpec : RunSpec
{
    protected override TrainingMethod Kind => TrainingMethod.Sft;

    public SftSpec() => Training = new TrainingSettings { LearningRate = 2e-4 };

    /// <summary>Pack tokenised texts into constant-length blocks with EOS between them (no padding).</summary>
    public bool Packing { get; init; } = false;
    /// <summary>With prompt/completion data and no packing: compute the loss on completion tokens only.</summary>
    public bool CompletionOnlyLoss { get; init; } = true;
    /// <summary>Prompts whose generations are shown at each evaluation; null = the first evaluation rows.</summary>
    public IReadOnlyList<string>? SamplePrompts { get; init; }
    /// <summary>How many evaluation prompts to sample at each evaluation.</summary>
    public int NumSamples { get; init; } = 8;

    protected override void ValidateMethod(SpecErrors e)
    {
        if (NumSamples < 0 || NumSamples > 1000) e.Add("numSamples", "must be between 0 and 1000");
    }
}

/// <summary>Reward modelling on preference pairs (TRL RewardConfig).</summary>
public sealed record RewardSpec : RunSpec
{
    protected override TrainingMethod Kind => TrainingMethod.Reward;

    public RewardSpec()
    {
        Training = new TrainingSettings { LearningRate = 1e-4 };
        Checkpoints = new CheckpointSettings { BestMetric = MetricNames.EvalAccuracy, LowerIsBetter = false };
    }

    /// <summary>Add the pair's margin (if the data has one) inside the loss: -logsigmoid(r_c - r_r - margin).</summary>
    public bool UseMargin { get; init; } = false;
    /// <summary>Coefficient of the auxiliary loss pushing rewards towards zero mean (center_rewards_coefficient); 0 = off.</summary>
    public double CenterRewardsCoefficient { get; init; } = 0;

    protected override void ValidateMethod(SpecErrors e)
    {
        if (!(CenterRewardsCoefficient >= 0 && CenterRewardsCoefficient <= 10)) e.Add("centerRewardsCoefficient", "must be between 0 and 10");
    }
}

/// <summary>Where RL methods get their scores: a trained reward model or a built-in exact scorer.</summary>
public sealed record RewardSource
{
    /// <summary>Folder of a reward model (sequence-classification head).</summary>
    public string? ModelPath { get; init; }
    /// <summary>Id of a reward-modelling run whose output to use.</summary>
    public long? RunId { get; init; }
    /// <summary>Name of a built-in scoring function (e.g. "arithmetic").</summary>
    public string? Builtin { get; init; }
    /// <summary>Within a pipeline: the reward model trained by the stage with this index.</summary>
    public int? Stage { get; init; }

    public override string ToString() => ModelPath ?? (RunId is not null ? $"run:{RunId}" : Stage is not null ? $"stage:{Stage}" : $"builtin:{Builtin}");

    internal void Validate(SpecErrors e, string f)
    {
        int given = (ModelPath is null ? 0 : 1) + (RunId is null ? 0 : 1) + (Builtin is null ? 0 : 1) + (Stage is null ? 0 : 1);
        if (given != 1) e.Add(f, "give exactly one of modelPath, runId, builtin or stage");
        if (Stage is < 0) e.Add($"{f}.stage", "must be a stage index (0 or more)");
        if (RunId is <= 0) e.Add($"{f}.runId", "must be a positive run id");
    }
}

/// <summary>Settings shared by the on-policy RL methods (PPO, RLOO): rollouts and KL control.</summary>
public abstract record RlSpec : RunSpec
{
    protected RlSpec()
    {
        // TRL's PPO/RLOO step their scheduler once per rollout batch with transformers' default, linear decay and no warmup.
        Training = new TrainingSettings { LearningRate = 3e-6, BatchSize = 8, MaxSteps = 100, Schedule = LrSchedule.Linear, WarmupRatio = 0 };
        Sampling = new SamplingSettings { Temperature = 0.7, MaxNewTokens = 53 };
        Checkpoints = new CheckpointSettings { BestMetric = MetricNames.ObjectiveScores, LowerIsBetter = false, EvalSteps = 10, SaveSteps = 25 };
    }

    public RewardSource Reward { get; init; } = new() { Builtin = "arithmetic" };
    /// <summary>Reference model; null = the policy's starting weights (adapters off, or a frozen copy).</summary>
    public ModelRef? Reference { get; init; }
    /// <summary>KL penalty coefficient (kl_coef).</summary>
    public double KlCoef { get; init; } = 0.05;
    /// <summary>Score given to responses that never emit EOS; null = no penalty (missing_eos_penalty).</summary>
    public double? MissingEosPenalty { get; init; }
    /// <summary>Optimisation epochs over each rollout batch (num_ppo_epochs).</summary>
    public int NumPpoEpochs { get; init; } = 4;
    /// <summary>Mini-batches per rollout batch (num_mini_batches).</summary>
    public int NumMiniBatches { get; init; } = 1;
    /// <summary>Clip range of the policy ratio (cliprange).</summary>
    public double ClipRange { get; init; } = 0.2;
    /// <summary>Write a sample table every N steps.</summary>
    public int SampleSteps { get; init; } = 10;
    /// <summary>Recompute the policy's log-probabilities of a rollout with a forward over the whole sequences (true:
    /// the first ratio of every step is exactly 1), or take them from the sampling loop's logits as TRL's PPOTrainer
    /// does (false: one forward fewer per rollout; under bf16 compute the decode path's attention differs slightly from
    /// the full forward's, measured mean 1e-3 and at most 0.08 nats per token on the tiny preset).</summary>
    public bool RecomputeLogProbs { get; init; } = true;

    protected override void ValidateMethod(SpecErrors e)
    {
        Reward.Validate(e, "reward");
        Reference?.Validate(e, "reference");
        if (!(KlCoef >= 0 && KlCoef <= 100)) e.Add("klCoef", "must be between 0 and 100");
        if (MissingEosPenalty is double p && !double.IsFinite(p)) e.Add("missingEosPenalty", "must be a finite number");
        if (NumPpoEpochs < 1 || NumPpoEpochs > 100) e.Add("numPpoEpochs", "must be between 1 and 100");
        if (NumMiniBatches < 1 || NumMiniBatches > Training.BatchSize) e.Add("numMiniBatches", "must be between 1 and training.batchSize");
        else if (Training.BatchSize % NumMiniBatches != 0) e.Add("numMiniBatches", "must divide training.batchSize");
        if (!(ClipRange > 0 && ClipRange < 10)) e.Add("clipRange", "must be above 0 and below 10");
        if (SampleSteps < 1) e.Add("sampleSteps", "must be at least 1");
        if (Sampling.Temperature <= 0) e.Add("sampling.temperature", "must be above 0 for on-policy sampling");
        ValidateRl(e);
    }

    protected virtual void ValidateRl(SpecErrors e) { }
}

/// <summary>Proximal policy optimisation with a value model (TRL PPOConfig).</summary>
public sealed record PpoSpec : RlSpec
{
    protected override TrainingMethod Kind => TrainingMethod.Ppo;

    /// <summary>Value-loss coefficient (vf_coef).</summary>
    public double VfCoef { get; init; } = 0.1;
    /// <summary>Clip range of the value prediction (cliprange_value).</summary>
    public double ClipRangeValue { get; init; } = 0.2;
    /// <summary>Discount (gamma).</summary>
    public double Gamma { get; init; } = 1.0;
    /// <summary>GAE lambda (lam).</summary>
    public double Lam { get; init; } = 0.95;
    /// <summary>Whiten the per-token rewards (whiten_rewards).</summary>
    public bool WhitenRewards { get; init; } = false;
    /// <summary>Adapt kl_coef towards <see cref="TargetKl"/> (Ziegler et al. adaptive controller).</summary>
    public bool AdaptiveKl { get; init; } = false;
    public double TargetKl { get; init; } = 6.0;
    /// <summary>Horizon of the adaptive KL controller.</summary>
    public double KlHorizon { get; init; } = 10_000;
    /// <summary>The value function as a linear head on the policy's own trunk (TRL's AutoModelForCausalLMWithValueHead,
    /// StackLLaMA's setting) instead of a separate value model: one trunk pass gives log-probabilities and values,
    /// and no second model is held; the value loss then also trains the policy's trunk.</summary>
    public bool SharedValueHead { get; init; }
    /// <summary>Steps at the start that train only the value function, the policy frozen (OpenRLHF's
    /// freezing_actor_steps): the advantages of the first policy updates then come from a value estimate that has
    /// seen some returns (most useful with <see cref="SharedValueHead"/>, whose head starts untrained).</summary>
    public int FreezeActorSteps { get; init; }
    /// <summary>Factor on the learning rate of the shared value head (it starts from zero next to a pre-trained trunk;
    /// at the policy's learning rate it learns slowly).</summary>
    public double ValueHeadLearningRateScale { get; init; } = 1.0;
    /// <summary>Value model: null = a value head on a copy of the policy's starting weights (or the reward model).</summary>
    public ModelRef? ValueModel { get; init; }

    protected override void ValidateRl(SpecErrors e)
    {
        if (!(VfCoef >= 0 && VfCoef <= 100)) e.Add("vfCoef", "must be between 0 and 100");
        if (!(ClipRangeValue > 0 && ClipRangeValue < 100)) e.Add("clipRangeValue", "must be above 0 and below 100");
        if (!(Gamma > 0 && Gamma <= 1)) e.Add("gamma", "must be above 0 and at most 1");
        if (!(Lam >= 0 && Lam <= 1)) e.Add("lam", "must be between 0 and 1");
        if (AdaptiveKl && !(TargetKl > 0 && double.IsFinite(TargetKl))) e.Add("targetKl", "must be positive");
        if (AdaptiveKl && !(KlHorizon > 0 && double.IsFinite(KlHorizon))) e.Add("klHorizon", "must be positive");
        ValueModel?.Validate(e, "valueModel");
        if (!(ValueHeadLearningRateScale > 0 && ValueHeadLearningRateScale <= 10_000)) e.Add("valueHeadLearningRateScale", "must be above 0 and at most 10,000");
        if (FreezeActorSteps < 0 || FreezeActorSteps > 100_000) e.Add("freezeActorSteps", "must be between 0 and 100,000");
        else if (Training.MaxSteps > 0 && FreezeActorSteps >= Training.MaxSteps) e.Add("freezeActorSteps", "must be below training.maxSteps (the policy would never train)");
        if (SharedValueHead && ValueModel is not null) e.Add("valueModel", "must be empty with sharedValueHead (the value head sits on the policy)");
    }
}

/// <summary>REINFORCE leave-one-out (TRL RLOOConfig): k samples per prompt, the others' mean as baseline.</summary>
public sealed record RlooSpec : RlSpec
{
    protected override TrainingMethod Kind => TrainingMethod.Rloo;

    /// <summary>Samples per prompt (rloo_k / num_generations). training.batchSize counts responses: batchSize / rlooK prompts per step.</summary>
    public int RlooK { get; init; } = 4;
    /// <summary>Normalise the advantages of each batch to mean 0, std 1 (normalize_advantage).</summary>
    public bool NormalizeAdvantage { get; init; } = false;

    protected override void ValidateRl(SpecErrors e)
    {
        if (RlooK < 2 || RlooK > 64) e.Add("rlooK", "must be between 2 and 64");
        else if (Training.BatchSize % RlooK != 0) e.Add("training.batchSize", "must be a multiple of rlooK (responses per step; each prompt is sampled rlooK times)");
    }
}

/// <summary>Direct preference optimisation (TRL DPOConfig, sigmoid loss).</summary>
public sealed record DpoSpec : RunSpec
{
    protected override TrainingMethod Kind => TrainingMethod.Dpo;

    public DpoSpec()
    {
        Training = new TrainingSettings { LearningRate = 5e-6 };
        Checkpoints = new CheckpointSettings { BestMetric = MetricNames.RewardsAccuracies, LowerIsBetter = false };
    }

    /// <summary>Temperature of the implicit reward (beta).</summary>
    public double Beta { get; init; } = 0.1;
    /// <summary>Label smoothing of the conservative DPO variant; 0 = plain sigmoid loss.</summary>
    public double LabelSmoothing { get; init; } = 0;
    /// <summary>Weight of the negative log-likelihood of the chosen completions added to the DPO loss (TRL's rpo_alpha,
    /// Pang et al. 2024 "Iterative reasoning preference optimization"); null = plain DPO. It keeps the chosen answers'
    /// likelihood from falling with the rejected ones'.</summary>
    public double? RpoAlpha { get; init; }
    /// <summary>Compute reference log-probabilities once before training (precompute_ref_log_probs).</summary>
    public bool PrecomputeReferenceLogProbs { get; init; } = false;
    /// <summary>Reference model; null = the policy's starting weights.</summary>
    public ModelRef? Reference { get; init; }
    /// <summary>Longest prompt kept (max_prompt_length); longer prompts are truncated from the left.</summary>
    public int MaxPromptLength { get; init; } = 128;

    protected override void ValidateMethod(SpecErrors e)
    {
        if (!(Beta > 0 && Beta <= 100)) e.Add("beta", "must be above 0 and at most 100");
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 0.5)) e.Add("labelSmoothing", "must be at least 0 and below 0.5");
        if (RpoAlpha is { } alpha && !(alpha >= 0 && alpha <= 100)) e.Add("rpoAlpha", "must be at least 0 and at most 100");
        if (MaxPromptLength < 1 || MaxPromptLength >= MaxLength) e.Add("maxPromptLength", "must be at least 1 and below maxLength");
        Reference?.Validate(e, "reference");
    }
}
