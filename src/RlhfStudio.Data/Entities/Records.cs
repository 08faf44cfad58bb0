namespace RlhfStudio.Data.Entities;

/// <summary>Lifecycle of a run. Stored as text.</summary>
public enum RunStatus { Queued, Running, Paused, Completed, Failed, Cancelled, Interrupted }

/// <summary>A training run: what was asked (spec as JSON) and how far it got.</summary>
public sealed class RunRecord
{
    public long Id { get; set; }
    public string Name { get; set; } = "";
    /// <summary>sft, reward, ppo, rloo, dpo.</summary>
    public string Method { get; set; } = "";
    public RunStatus Status { get; set; } = RunStatus.Queued;
    /// <summary>The run specification as the engine's JSON.</summary>
    public string SpecJson { get; set; } = "{}";
    /// <summary>Display strings of the base model and dataset, for lists and filters.</summary>
    public string ModelName { get; set; } = "";
    public string DatasetName { get; set; } = "";
    public DateTimeOffset CreatedAt { get; set; }
    public DateTimeOffset? StartedAt { get; set; }
    public DateTimeOffset? EndedAt { get; set; }
    /// <summary>Why the run failed, in words a user can act on.</summary>
    public string? Error { get; set; }
    /// <summary>Folder holding this run's checkpoints and final model.</summary>
    public string? OutputDir { get; set; }
    /// <summary>Order among queued runs (lower starts first).</summary>
    public double QueuePosition { get; set; }
    public long Step { get; set; }
    public long TotalSteps { get; set; }
    public double? EtaSeconds { get; set; }
    /// <summary>Pipeline this run belongs to, and the stage it is (0 = first).</summary>
    public long? PipelineId { get; set; }
    public int PipelineStage { get; set; }
    /// <summary>Path of the final model once completed.</summary>
    public string? FinalModelPath { get; set; }
    /// <summary>Complete checkpoint folder the next start resumes from (set by pause, crash recovery, resume).</summary>
    public string? ResumeFrom { get; set; }
    /// <summary>Pipeline: this run starts only after that run completed, and takes its output.</summary>
    public long? DependsOnRunId { get; set; }
    /// <summary>How many times the run was started (a resume after a crash or pause counts).</summary>
    public int Attempts { get; set; }

    public List<CheckpointRecord> Checkpoints { get; set; } = [];
}

/// <summary>A named metric of a run ("train/loss"); its points live in <see cref="MetricPoint"/>.</summary>
public sealed class MetricSeries
{
    public long Id { get; set; }
    public long RunId { get; set; }
    public string Name { get; set; } = "";
}

/// <summary>One value of a metric series at an optimisation step. Keyed by (series, step): a step
/// reported again (after a resume) replaces the earlier value instead of duplicating it.</summary>
public sealed class MetricPoint
{
    public long SeriesId { get; set; }
    public long Step { get; set; }
    public double Value { get; set; }
    /// <summary>Unix time in milliseconds when the engine reported it.</summary>
    public long TimeMs { get; set; }
}

/// <summary>A generated sample (prompt, completion, score) at a step, in a named table.</summary>
public sealed class SampleRecord
{
    public long Id { get; set; }
    public long RunId { get; set; }
    public long Step { get; set; }
    /// <summary>"eval", "rollout", "scores" ...</summary>
    public string Table { get; set; } = "eval";
    public int Index { get; set; }
    public string Prompt { get; set; } = "";
    public string Completion { get; set; } = "";
    public double? Score { get; set; }
    public string? Reference { get; set; }
    public double? ReferenceScore { get; set; }
    /// <summary>Other columns (sampling settings, true-score, ...) as a JSON object.</summary>
    public string? ExtraJson { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}

/// <summary>A complete checkpoint on disk with its evaluation metrics.</summary>
public sealed class CheckpointRecord
{
    public long Id { get; set; }
    public long RunId { get; set; }
    public long Step { get; set; }
    public string Path { get; set; } = "";
    /// <summary>Evaluation metrics at this step as a JSON object of name -> value.</summary>
    public string MetricsJson { get; set; } = "{}";
    public DateTimeOffset CreatedAt { get; set; }
}

/// <summary>A log line or warning of a run.</summary>
public sealed class RunEventRecord
{
    public long Id { get; set; }
    public long RunId { get; set; }
    public DateTimeOffset Time { get; set; }
    public long? Step { get; set; }
    /// <summary>Info, Warning, Error.</summary>
    public string Level { get; set; } = "Info";
    /// <summary>Warning code ("kl-negative", "entropy-collapse", ...) or null for a plain log line.</summary>
    public string? Code { get; set; }
    public string Message { get; set; } = "";
}

/// <summary>A registered dataset (uploaded, or a path under an allowed data root).</summary>
public sealed class DatasetRecord
{
    public long Id { get; set; }
    public string Name { get; set; } = "";
    public string Path { get; set; } = "";
    /// <summary>Detected format: text, prompt-completion, messages, preference, prompt-only, alpaca, stackexchange.</summary>
    public string Format { get; set; } = "";
    public long? Rows { get; set; }
    public long SizeBytes { get; set; }
    public bool Uploaded { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}

/// <summary>A registered model folder (Hugging Face layout) under an allowed model root.</summary>
public sealed class ModelRecord
{
    public long Id { get; set; }
    public string Name { get; set; } = "";
    public string Path { get; set; } = "";
    public string Architecture { get; set; } = "";
    public long? Parameters { get; set; }
    public string? Tokenizer { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}

/// <summary>A stored measurement of this machine's matmul throughput.</summary>
public sealed class MachineBenchmarkRecord
{
    public long Id { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
    public int Size { get; set; }
    public double Fp32Gflops { get; set; }
    public double Bf16Gflops { get; set; }
    public int Threads { get; set; }
    public string CpuModel { get; set; } = "";
    public string LibTorchVersion { get; set; } = "";
}
