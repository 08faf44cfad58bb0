using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Components.Launch;

/// <summary>Starting points offered on the New run page, per method, and the SFT -> reward -> PPO pipeline built from them.</summary>
public static class RunPresets
{
    public const string QuickStart = "quick";
    public const string StackLlama = "stackllama";

    public static readonly IReadOnlyList<(string Key, string Title, string Description)> All =
    [
        (QuickStart, "Quick start: built-in arithmetic + tiny model",
            "The built-in \"tiny\" Llama (random init, built-in tokenizer) on the generated arithmetic task: trains in minutes on a CPU, full fine-tuning in bf16 (the settings of examples/arithmetic-*.json)."),
        (StackLlama, "Real model: StackLLaMA LoRA settings",
            "TRL's StackLLaMA recipe: LoRA r=16, alpha=32, dropout 0.05 on q_proj/v_proj (the reward model used r=8, dropout 0.1), " +
            "the scripts' learning rates and batch sizes, StackLLaMA prompt template, bf16. Pick a Llama-family model folder and the StackExchange pairs."),
    ];

    public static RunSpec For(string preset, TrainingMethod method) => preset == StackLlama ? StackLlamaSpec(method) : QuickStartSpec(method);

    /// <summary>SFT -> reward model -> PPO: the reward model starts from the SFT model (stage 0), PPO optimises the SFT model
    /// against the reward model (stage 1).</summary>
    public static IReadOnlyList<RunSpec> Pipeline(string preset, string baseName)
    {
        var sft = For(preset, TrainingMethod.Sft);
        var reward = For(preset, TrainingMethod.Reward);
        var ppo = (PpoSpec)For(preset, TrainingMethod.Ppo);
        string prefix = string.IsNullOrWhiteSpace(baseName) ? "pipeline" : baseName.Trim();
        return
        [
            sft with { Name = $"{prefix} · SFT" },
            reward with { Name = $"{prefix} · reward", Model = ModelRef.FromStage(0) },
            ppo with { Name = $"{prefix} · PPO", Model = ModelRef.FromStage(0), Reward = new RewardSource { Stage = 1 } },
        ];
    }

    // Quick start: the tested configs of examples/arithmetic-{sft,reward,ppo,rloo,dpo}.json (embedded in this assembly), with
    // the tiny preset as the starting model; the CLI runs chain them through runs/ folders, the studio through the
    // pipeline's stage references or the model picker. A reward model given by path is not carried over (the user picks
    // one); the built-in scorer is.
    private static RunSpec QuickStartSpec(TrainingMethod method)
    {
        var example = Example(method switch
        {
            TrainingMethod.Sft => "arithmetic-sft",
            TrainingMethod.Reward => "arithmetic-reward",
            TrainingMethod.Ppo => "arithmetic-ppo",
            TrainingMethod.Rloo => "arithmetic-rloo",
            _ => "arithmetic-dpo",
        });
        var defaults = RunForm.DefaultSpec(method);
        var spec = example with { Name = defaults.Name, Model = ModelRef.FromPreset("tiny") };
        return spec is RlSpec rl && rl.Reward is { Builtin: null } ? rl with { Reward = ((RlSpec)defaults).Reward } : spec;
    }

    private static RunSpec Example(string name)
    {
        using var stream = typeof(RunPresets).Assembly.GetManifestResourceStream($"examples/{name}.json")
            ?? throw new InvalidOperationException($"examples/{name}.json is not embedded in {typeof(RunPresets).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return RunSpec.FromJson(reader.ReadToEnd());
    }

    // TRL examples/research_projects/stack_llama/scripts: supervised_finetuning.py, reward_modeling.py, rl_training.py.
    private static RunSpec StackLlamaSpec(TrainingMethod method)
    {
        var lora = new AdapterSettings { Kind = AdapterKind.Lora, Rank = 16, Alpha = 32, Dropout = 0.05, TargetModules = ["q_proj", "v_proj"] };
        var spec = RunForm.DefaultSpec(method) with
        {
            Model = ModelRef.FromPath(""),
            Dataset = new DatasetRef { Path = "" },
            Precision = Precision.Bf16,
            Template = PromptTemplateNames.StackLlama,
            Adapter = lora,
        };
        return spec switch
        {
            // lr 1e-5, cosine, 100 warmup steps of 10,000, weight decay 0.05, batch 4, seq_length 1024, eval/save every 1,000.
            SftSpec s => s with
            {
                MaxLength = 1024,
                Training = s.Training with { LearningRate = 1e-5, Schedule = LrSchedule.Cosine, WarmupRatio = 0.01, MaxSteps = 10_000, BatchSize = 4, GradientAccumulation = 1, WeightDecay = 0.05 },
                Checkpoints = s.Checkpoints with { EvalSteps = 1000, SaveSteps = 1000 },
                Packing = true,
            },
            // lr 2e-5, linear, 1 epoch, batch 4, weight decay 0.001, max_length 512; LoRA r=8, alpha 32, dropout 0.1.
            RewardSpec r => r with
            {
                MaxLength = 512,
                Adapter = lora with { Rank = 8, Dropout = 0.1 },
                Training = r.Training with { LearningRate = 2e-5, Schedule = LrSchedule.Linear, Epochs = 1, MaxSteps = 0, BatchSize = 4, GradientAccumulation = 1, WeightDecay = 0.001 },
                Checkpoints = r.Checkpoints with { EvalSteps = 500, SaveSteps = 500 },
            },
            // lr 1.41e-5, batch 32, 4 PPO epochs, adaptive KL from 0.2, 32..128 new tokens. The script's mini_batch_size 1 with
            // gradient_accumulation_steps 4 updates on 4 samples at a time: 8 mini-batches per rollout batch.
            PpoSpec p => p with
            {
                MaxLength = 512,
                Training = p.Training with { LearningRate = 1.41e-5, BatchSize = 32, MaxSteps = 20_000 },
                Sampling = p.Sampling with { MaxNewTokens = 128, MinNewTokens = 32, Temperature = 1.0, TopK = 0, TopP = 1.0 },
                NumPpoEpochs = 4, NumMiniBatches = 8, KlCoef = 0.2, AdaptiveKl = true,
                Checkpoints = p.Checkpoints with { EvalSteps = 100, SaveSteps = 100 },
            },
            RlooSpec r => r with
            {
                MaxLength = 512,
                Training = r.Training with { LearningRate = 1.41e-5, BatchSize = 32, MaxSteps = 20_000 },
                Sampling = r.Sampling with { MaxNewTokens = 128, Temperature = 1.0 },
            },
            // TRL's DPO on the StackExchange pairs: lr 5e-4 with LoRA, batch 4, max_length 1024, max_prompt_length 512, beta 0.1.
            DpoSpec d => d with
            {
                MaxLength = 1024, MaxPromptLength = 512, Beta = 0.1,
                Training = d.Training with { LearningRate = 5e-4, Schedule = LrSchedule.Cosine, WarmupRatio = 0.01, BatchSize = 4, GradientAccumulation = 4, MaxSteps = 1000, WeightDecay = 0.05 },
                Checkpoints = d.Checkpoints with { EvalSteps = 100, SaveSteps = 100 },
            },
            _ => spec,
        };
    }
}
