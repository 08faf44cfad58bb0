// Run specifications: one record per training method over shared base settings. The web form, the
// REST API and the CLI all produce these records (JSON, camelCase, "method" discriminator) and share
// their validation, whose errors name the field by its JSON path ("training.learningRate").
using System.Text.Json;
using System.Text.Json.Serialization;

namespace RlhfStudio.Engine.Jobs;

/// <summary>Compute precision. Bf16 = bf16 matmuls with fp32 master weights and optimizer state.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Precision>))]
public enum Precision { Fp32, Bf16 }

/// <summary>How the model's weights are trained.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<AdapterKind>))]
public enum AdapterKind { Full, Lora, Freeze }

/// <summary>Learning-rate schedule shape.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<LrSchedule>))]
public enum LrSchedule { Cosine, Linear, Constant }

/// <summary>Where the model comes from: a Hugging Face folder on disk, a built-in preset, or an earlier run's output.</summary>
public sealed record ModelRef
{
    /// <summary>Folder holding <c>config.json</c> and safetensors weights (under an allowed model root).</summary>
    public string? Path { get; init; }
    /// <summary>Name of a built-in randomly initialised model (e.g. "tiny").</summary>
    public string? Preset { get; init; }
    /// <summary>Id of an earlier run whose final model to start from.</summary>
    public long? RunId { get; init; }
    /// <summary>Within a pipeline: the output of its stage with this index (0 = first); replaced by the
    /// stage's run id when the pipeline is queued.</summary>
    public int? Stage { get; init; }

    public static ModelRef FromPreset(string name) => new() { Preset = name };
    public static ModelRef FromPath(string path) => new() { Path = path };
    public static ModelRef FromRun(long runId) => new() { RunId = runId };

    public static ModelRef FromStage(int stage) => new() { Stage = stage };

    public override string ToString() => Path ?? (Preset is not null ? $"preset:{Preset}" : RunId is not null ? $"run:{RunId}"
        : Stage is not null ? $"stage:{Stage}" : "(none)");

    internal void Validate(SpecErrors errors, string field)
    {
        int given = (Path is null ? 0 : 1) + (Preset is null ? 0 : 1) + (RunId is null ? 0 : 1) + (Stage is null ? 0 : 1);
        if (given != 1) errors.Add(field, "give exactly one of path, preset, runId or stage");
        if (Stage is < 0) errors.Add($"{field}.stage", "must be a stage index (0 or more)");
        if (Path is not null && string.IsNullOrWhiteSpace(Path)) errors.Add($"{field}.path", "must not be empty");
        if (Preset is not null && string.IsNullOrWhiteSpace(Preset)) errors.Add($"{field}.preset", "must not be empty");
        if (RunId is <= 0) errors.Add($"{field}.runId", "must be a positive run id");
    }
}

/// <summary>Where the data comes from: a file or folder (JSONL, Parquet, Parquet shards) or a built-in task.</summary>
public sealed record DatasetRef
{
    /// <summary>JSONL or Parquet file, or a folder of Parquet shards (under an allowed dataset root).</summary>
    public string? Path { get; init; }
    /// <summary>Name of a built-in generated dataset (e.g. "arithmetic").</summary>
    public string? Builtin { get; init; }
    /// <summary>Split to train on when the source has named splits.</summary>
    public string Split { get; init; } = "train";
    /// <summary>Split to evaluate on; when absent, <see cref="EvalFraction"/> of the training rows are held out.</summary>
    public string? EvalSplit { get; init; }
    /// <summary>Fraction of rows held out for evaluation when there is no evaluation split.</summary>
    public double EvalFraction { get; init; } = 0.05;
    /// <summary>Rename columns: expected name -> name in the file (e.g. "chosen" -> "response_j").</summary>
    public IReadOnlyDictionary<string, string>? ColumnMap { get; init; }
    /// <summary>Use at most this many training rows (null = all).</summary>
    public int? MaxRows { get; init; }

    public override string ToString() => Path ?? (Builtin is not null ? $"builtin:{Builtin}" : "(none)");

    internal void Validate(SpecErrors errors, string field)
    {
        int given = (Path is null ? 0 : 1) + (Builtin is null ? 0 : 1);
        if (given != 1) errors.Add(field, "give exactly one of path or builtin");
        if (Path is not null && string.IsNullOrWhiteSpace(Path)) errors.Add($"{field}.path", "must not be empty");
        if (string.IsNullOrWhiteSpace(Split)) errors.Add($"{field}.split", "must not be empty");
        if (!(EvalFraction >= 0 && EvalFraction < 1)) errors.Add($"{field}.evalFraction", "must be at least 0 and below 1");
        if (MaxRows is <= 0) errors.Add($"{field}.maxRows", "must be positive");
    }
}

/// <summary>Optimisation settings shared by all methods (TRL / transformers TrainingArguments names in comments).</summary>
public sealed record TrainingSettings
{
    /// <summary>Peak learning rate (learning_rate).</summary>
    public double LearningRate { get; init; } = 2e-4;
    public LrSchedule Schedule { get; init; } = LrSchedule.Cosine;
    /// <summary>Fraction of total steps spent warming up linearly from 0 (warmup_ratio).</summary>
    public double WarmupRatio { get; init; } = 0.03;
    /// <summary>Optimisation steps to run; 0 = derive from <see cref="Epochs"/> (max_steps).</summary>
    public int MaxSteps { get; init; } = 0;
    /// <summary>Passes over the training data when <see cref="MaxSteps"/> is 0 (num_train_epochs).</summary>
    public double Epochs { get; init; } = 1;
    /// <summary>Examples per micro-batch (per_device_train_batch_size).</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Micro-batches per optimisation step (gradient_accumulation_steps).</summary>
    public int GradientAccumulation { get; init; } = 1;
    /// <summary>Gradient-norm clipping threshold; 0 disables (max_grad_norm).</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    public double WeightDecay { get; init; } = 0.0;
    public double AdamBeta1 { get; init; } = 0.9;
    public double AdamBeta2 { get; init; } = 0.999;
    public double AdamEpsilon { get; init; } = 1e-8;

    internal void Validate(SpecErrors e, string f)
    {
        if (!(LearningRate > 0 && LearningRate <= 1)) e.Add($"{f}.learningRate", "must be above 0 and at most 1");
        if (!(WarmupRatio >= 0 && WarmupRatio < 1)) e.Add($"{f}.warmupRatio", "must be at least 0 and below 1");
        if (MaxSteps < 0 || MaxSteps > 10_000_000) e.Add($"{f}.maxSteps", "must be between 0 (use epochs) and 10,000,000");
        if (MaxSteps == 0 && !(Epochs > 0 && Epochs <= 10_000)) e.Add($"{f}.epochs", "must be above 0 and at most 10,000 when maxSteps is 0");
        if (BatchSize < 1 || BatchSize > 4096) e.Add($"{f}.batchSize", "must be between 1 and 4096");
        if (GradientAccumulation < 1 || GradientAccumulation > 4096) e.Add($"{f}.gradientAccumulation", "must be between 1 and 4096");
        if (!(MaxGradNorm >= 0) || double.IsInfinity(MaxGradNorm)) e.Add($"{f}.maxGradNorm", "must be 0 (off) or a positive number");
        if (!(WeightDecay >= 0 && WeightDecay <= 1)) e.Add($"{f}.weightDecay", "must be between 0 and 1");
        if (!(AdamBeta1 >= 0 && AdamBeta1 < 1)) e.Add($"{f}.adamBeta1", "must be at least 0 and below 1");
        if (!(AdamBeta2 >= 0 && AdamBeta2 < 1)) e.Add($"{f}.adamBeta2", "must be at least 0 and below 1");
        if (!(AdamEpsilon > 0 && AdamEpsilon < 1)) e.Add($"{f}.adamEpsilon", "must be above 0 and below 1");
    }
}

/// <summary>Full fine-tuning, LoRA adapters, or freezing the lower layers.</summary>
public sealed record AdapterSettings
{
    public AdapterKind Kind { get; init; } = AdapterKind.Full;
    /// <summary>LoRA rank r.</summary>
    public int Rank { get; init; } = 16;
    /// <summary>LoRA alpha; the update is scaled by alpha / r.</summary>
    public double Alpha { get; init; } = 32;
    public double Dropout { get; init; } = 0.05;
    /// <summary>Module names to adapt ("q_proj", "v_proj", ...) or the single entry "all-linear".</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = ["q_proj", "v_proj"];
    /// <summary>With <see cref="AdapterKind.Freeze"/>: how many of the lowest layers (and the embeddings) stay frozen.</summary>
    public int FrozenLayers { get; init; } = 0;

    internal void Validate(SpecErrors e, string f)
    {
        if (Kind == AdapterKind.Lora)
        {
            if (Rank < 1 || Rank > 1024) e.Add($"{f}.rank", "must be between 1 and 1024");
            if (!(Alpha > 0 && Alpha <= 1_000_000)) e.Add($"{f}.alpha", "must be positive");
            if (!(Dropout >= 0 && Dropout < 1)) e.Add($"{f}.dropout", "must be at least 0 and below 1");
            if (TargetModules.Count == 0) e.Add($"{f}.targetModules", "name at least one module, or \"all-linear\"");
            if (TargetModules.Any(string.IsNullOrWhiteSpace)) e.Add($"{f}.targetModules", "must not contain empty names");
        }
        if (Kind == AdapterKind.Freeze && FrozenLayers < 1) e.Add($"{f}.frozenLayers", "must be at least 1 when kind is freeze");
        if (FrozenLayers < 0) e.Add($"{f}.frozenLayers", "must not be negative");
    }
}

/// <summary>Logging, evaluation and checkpointing cadence.</summary>
public sealed record CheckpointSettings
{
    /// <summary>Report training metrics every N steps (logging_steps).</summary>
    public int LoggingSteps { get; init; } = 1;
    /// <summary>Evaluate (loss, accuracy, sample table) every N steps; 0 = only at the end (eval_steps).</summary>
    public int EvalSteps { get; init; } = 50;
    /// <summary>Save a checkpoint every N steps; 0 = only at the end (save_steps).</summary>
    public int SaveSteps { get; init; } = 100;
    /// <summary>Keep at most this many checkpoints (the best is always kept); 0 = keep all (save_total_limit).</summary>
    public int KeepLast { get; init; } = 3;
    /// <summary>Metric that picks the best checkpoint, and whether lower is better.</summary>
    public string BestMetric { get; init; } = MetricNames.EvalLoss;
    public bool LowerIsBetter { get; init; } = true;

    internal void Validate(SpecErrors e, string f)
    {
        if (LoggingSteps < 1) e.Add($"{f}.loggingSteps", "must be at least 1");
        if (EvalSteps < 0) e.Add($"{f}.evalSteps", "must be 0 (end only) or positive");
        if (SaveSteps < 0) e.Add($"{f}.saveSteps", "must be 0 (end only) or positive");
        if (KeepLast < 0) e.Add($"{f}.keepLast", "must be 0 (keep all) or positive");
        if (string.IsNullOrWhiteSpace(BestMetric)) e.Add($"{f}.bestMetric", "must name a metric");
    }
}

/// <summary>Sampling settings for generated samples (evaluation tables, rollouts).</summary>
public sealed record SamplingSettings
{
    public int MaxNewTokens { get; init; } = 64;
    public int MinNewTokens { get; init; } = 0;
    /// <summary>0 = greedy.</summary>
    public double Temperature { get; init; } = 0.7;
    /// <summary>0 = off.</summary>
    public int TopK { get; init; } = 0;
    /// <summary>1 = off.</summary>
    public double TopP { get; init; } = 1.0;

    internal void Validate(SpecErrors e, string f)
    {
        if (MaxNewTokens < 1 || MaxNewTokens > 32_768) e.Add($"{f}.maxNewTokens", "must be between 1 and 32768");
        if (MinNewTokens < 0 || MinNewTokens > MaxNewTokens) e.Add($"{f}.minNewTokens", "must be between 0 and maxNewTokens");
        if (!(Temperature >= 0 && Temperature <= 100)) e.Add($"{f}.temperature", "must be between 0 (greedy) and 100");
        if (TopK < 0) e.Add($"{f}.topK", "must be 0 (off) or positive");
        if (!(TopP > 0 && TopP <= 1)) e.Add($"{f}.topP", "must be above 0 and at most 1");
    }
}

/// <summary>The settings every method shares. Serialised with a "method" discriminator.</summary>
[JsonPolymorphic(TypeDiscriminatorPropertyName = "method", UnknownDerivedTypeHandling = JsonUnknownDerivedTypeHandling.FailSerialization)]
[JsonDerivedType(typeof(SftSpec), "sft")]
[JsonDerivedType(typeof(RewardSpec), "reward")]
[JsonDerivedType(typeof(PpoSpec), "ppo")]
[JsonDerivedType(typeof(RlooSpec), "rloo")]
[JsonDerivedType(typeof(DpoSpec), "dpo")]
public abstract record RunSpec
{
    [JsonIgnore] public TrainingMethod Method => Kind;

    /// <summary>The method this spec is for (protected so that it never clashes with the JSON discriminator).</summary>
    protected abstract TrainingMethod Kind { get; }

    /// <summary>A name for the run, shown in lists.</summary>
    public string Name { get; init; } = "";
    public ModelRef Model { get; init; } = ModelRef.FromPreset("tiny");
    public DatasetRef Dataset { get; init; } = new() { Builtin = "arithmetic" };
    /// <summary>"cpu", "cuda", "cuda:1" ...</summary>
    public string Device { get; init; } = "cpu";
    public Precision Precision { get; init; } = Precision.Bf16;
    public int Seed { get; init; } = 42;
    /// <summary>Longest tokenised example (prompt + completion); longer ones are truncated.</summary>
    public int MaxLength { get; init; } = 256;
    /// <summary>Prompt template name ("stackllama", "chatml", "llama2") or null for the model's default.</summary>
    public string? Template { get; init; }
    public TrainingSettings Training { get; init; } = new();
    public AdapterSettings Adapter { get; init; } = new();
    public CheckpointSettings Checkpoints { get; init; } = new();
    /// <summary>How evaluation samples (and rollouts, for RL methods) are generated.</summary>
    public SamplingSettings Sampling { get; init; } = new();
    /// <summary>Skip a batch whose loss is NaN/inf instead of failing the run.</summary>
    public bool SkipNonFiniteLoss { get; init; } = false;

    /// <summary>All problems with this spec; empty when it is valid.</summary>
    public IReadOnlyList<SpecError> Validate()
    {
        var errors = new SpecErrors();
        if (Name.Length > 200) errors.Add("name", "must be at most 200 characters");
        Model.Validate(errors, "model");
        Dataset.Validate(errors, "dataset");
        if (!IsDevice(Device)) errors.Add("device", $"\"{Device}\" is not a device: use \"cpu\", \"cuda\" or \"cuda:N\"");
        if (MaxLength < 8 || MaxLength > 131_072) errors.Add("maxLength", "must be between 8 and 131072");
        if (Template is not null && !PromptTemplateNames.All.Contains(Template))
            errors.Add("template", $"unknown template \"{Template}\": use one of {string.Join(", ", PromptTemplateNames.All)}");
        Training.Validate(errors, "training");
        Adapter.Validate(errors, "adapter");
        Checkpoints.Validate(errors, "checkpoints");
        Sampling.Validate(errors, "sampling");
        ValidateMethod(errors);
        return errors.Items;
    }

    /// <summary>Throws <see cref="RunSpecException"/> listing every problem when the spec is invalid.</summary>
    public void EnsureValid()
    {
        var errors = Validate();
        if (errors.Count > 0) throw new RunSpecException(errors);
    }

    /// <summary>Method-specific checks.</summary>
    protected virtual void ValidateMethod(SpecErrors errors) { }

    private static bool IsDevice(string device) =>
        device == "cpu" || device == "cuda" || device == "mps"
        || (device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(device.AsSpan(5), out var i) && i >= 0);

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        AllowTrailingCommas = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Parses a spec from JSON. Malformed JSON, an unknown method or an unknown field give a
    /// <see cref="RunSpecException"/> naming the place; the parsed spec is validated too.</summary>
    public static RunSpec FromJson(string json)
    {
        RunSpec? spec;
        try
        {
            spec = JsonSerializer.Deserialize<RunSpec>(json, Json);
        }
        catch (JsonException ex)
        {
            var field = string.IsNullOrEmpty(ex.Path) || ex.Path == "$" ? "$" : ex.Path.TrimStart('$', '.');
            var message = ex.Message;
            int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
            if (cut > 0) message = message[..cut];
            if (message.Contains("type discriminator", StringComparison.OrdinalIgnoreCase))
                message = "\"method\" must be the first field and one of sft, reward, ppo, rloo, dpo";
            throw new RunSpecException([new SpecError(field, message)]);
        }
        catch (NotSupportedException ex)
        {
            throw new RunSpecException([new SpecError("method", "\"method\" is missing or unknown: use sft, reward, ppo, rloo or dpo (" + ex.Message + ")")]);
        }
        if (spec is null) throw new RunSpecException([new SpecError("$", "the document is empty (null)")]);
        spec.EnsureValid();
        return spec;
    }
}

/// <summary>Names of the prompt templates the engine provides.</summary>
public static class PromptTemplateNames
{
    public const string StackLlama = "stackllama";
    public const string ChatMl = "chatml";
    public const string Llama2 = "llama2";
    public static readonly IReadOnlyList<string> All = [StackLlama, ChatMl, Llama2];
}

/// <summary>One problem with a spec: the JSON path of the field and what is wrong with it.</summary>
public sealed record SpecError(string Field, string Message)
{
    public override string ToString() => $"{Field}: {Message}";
}

/// <summary>Collects spec errors during validation.</summary>
public sealed class SpecErrors
{
    private readonly List<SpecError> _items = [];
    public IReadOnlyList<SpecError> Items => _items;
    public void Add(string field, string message) => _items.Add(new SpecError(field, message));
}

/// <summary>Thrown for an invalid run specification; <see cref="Errors"/> names every bad field.</summary>
public sealed class RunSpecException(IReadOnlyList<SpecError> errors)
    : Exception("Invalid run specification: " + string.Join("; ", errors))
{
    public IReadOnlyList<SpecError> Errors { get; } = errors;
}
