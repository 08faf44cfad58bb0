// The engine/host contract. Everything a host (web studio, CLI, tests) needs to run a training job
// and everything a job may tell its host lives in this file:
//
//   host                                 engine
//   ----                                 ------
//   RunSpec (typed, validated)   --->    TrainingJobs.Create(spec) -> ITrainingJob
//   RunContext (spec, output dir,        job.Run(context) on a dedicated thread
//     reporter, cancellation,            reports metrics/samples/checkpoints/progress/events
//     resume checkpoint)         <---    through IRunReporter while it runs
//                                <---    returns RunOutcome (how it ended)
//
// Rules for jobs: check the cancellation token at every optimisation-step boundary; when it fires,
// save a checkpoint, report it and return Cancelled. Report metrics under TRL's names (MetricNames).
// Never throw for bad input the user can fix: return Failed with a message that names the problem.
// Rules for hosts: reporter calls arrive on the job's thread and must not block for long.
using System.Text.Json.Serialization;

namespace RlhfStudio.Engine.Jobs;

/// <summary>A training method the engine knows. The JSON form is the lower-case name.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<TrainingMethod>))]
public enum TrainingMethod { Sft, Reward, Ppo, Rloo, Dpo }

/// <summary>Everything a running job needs from its host.</summary>
/// <param name="Spec">The validated specification.</param>
/// <param name="OutputDirectory">Where the job writes checkpoints (<c>checkpoint-&lt;step&gt;/</c>) and its final model.</param>
/// <param name="Reporter">Where the job reports what happens.</param>
/// <param name="Cancellation">Fires when the host wants the job to stop (cancel or pause); the job saves a checkpoint first.</param>
/// <param name="ResumeFrom">A complete checkpoint folder to continue from, or null to start fresh.</param>
public sealed record RunContext(
    RunSpec Spec,
    string OutputDirectory,
    IRunReporter Reporter,
    CancellationToken Cancellation,
    string? ResumeFrom = null);

/// <summary>A training job: one per method, created by <see cref="TrainingJobs.Create"/>.</summary>
public interface ITrainingJob
{
    /// <summary>Runs to the end, to cancellation or to failure. Runs synchronously on the caller's thread
    /// (TorchSharp dispose scopes are per thread); the host gives it a dedicated thread.</summary>
    RunOutcome Run(RunContext context);
}

/// <summary>How a job ended.</summary>
public enum RunEndState { Completed, Cancelled, Failed }

/// <param name="State">How it ended.</param>
/// <param name="Message">For failures, what went wrong in words a user can act on.</param>
/// <param name="LastCheckpoint">The newest complete checkpoint folder, if any.</param>
/// <param name="FinalModel">Folder of the final model (HF layout), when the job completed.</param>
public sealed record RunOutcome(RunEndState State, string? Message = null, string? LastCheckpoint = null, string? FinalModel = null)
{
    public static RunOutcome Completed(string? finalModel, string? lastCheckpoint = null) => new(RunEndState.Completed, null, lastCheckpoint, finalModel);
    public static RunOutcome Cancelled(string? lastCheckpoint) => new(RunEndState.Cancelled, "cancelled", lastCheckpoint);
    public static RunOutcome Failed(string message, string? lastCheckpoint = null) => new(RunEndState.Failed, message, lastCheckpoint);
}

/// <summary>The channel from a running job to its host. Calls come from the job's thread, in order.</summary>
public interface IRunReporter
{
    /// <summary>Scalar metrics at one optimisation step, named as in TRL (see <see cref="MetricNames"/>).</summary>
    void Metrics(long step, IReadOnlyDictionary<string, double> values);

    /// <summary>A table of generated samples (evaluation generations, PPO rollouts, reward scores).</summary>
    void Samples(long step, IReadOnlyList<SampleRow> rows);

    /// <summary>A complete checkpoint was written.</summary>
    void Checkpoint(CheckpointReport checkpoint);

    /// <summary>Where the job is; sent at most a few times per second.</summary>
    void Progress(RunProgress progress);

    /// <summary>A log line or a warning worth showing with the run (negative KL, entropy collapse, ...).</summary>
    void Event(RunEvent runEvent);
}

/// <summary>One generated sample. <paramref name="Index"/> orders rows within a step's table and, with the
/// step and <paramref name="Table"/>, identifies the row (a resumed run that re-reports a step replaces it).</summary>
public sealed record SampleRow(
    int Index,
    string Prompt,
    string Completion,
    double? Score = null,
    string? Reference = null,
    double? ReferenceScore = null,
    string Table = "eval",
    IReadOnlyDictionary<string, string>? Extra = null);

/// <summary>A checkpoint on disk (HF layout, or PEFT layout for adapters) with the eval metrics at that step.</summary>
public sealed record CheckpointReport(long Step, string Path, IReadOnlyDictionary<string, double> Metrics);

/// <summary>Progress of a job. <paramref name="Phase"/> says what it is doing ("train", "eval", "rollout", "save").</summary>
public sealed record RunProgress(long Step, long TotalSteps, TimeSpan Elapsed, TimeSpan? Eta, string Phase = "train")
{
    public double Fraction => TotalSteps <= 0 ? 0 : Math.Clamp((double)Step / TotalSteps, 0, 1);
}

public enum RunEventLevel { Info, Warning, Error }

/// <summary>A log line (<see cref="Code"/> null) or a named warning such as <c>kl-negative</c>.</summary>
public sealed record RunEvent(RunEventLevel Level, string Message, long? Step = null, string? Code = null)
{
    public static RunEvent Info(string message, long? step = null) => new(RunEventLevel.Info, message, step);
    public static RunEvent Warn(string code, string message, long? step = null) => new(RunEventLevel.Warning, message, step, code);
}

/// <summary>Metric names, as Hugging Face TRL logs them, so curves read the same as in W&amp;B.</summary>
public static class MetricNames
{
    public const string TrainLoss = "train/loss";
    public const string LearningRate = "train/learning_rate";
    public const string GradNorm = "train/grad_norm";
    public const string Epoch = "train/epoch";
    public const string TokensPerSecond = "train/tokens_per_second";
    public const string MeanTokenAccuracy = "train/mean_token_accuracy";
    public const string EvalLoss = "eval/loss";
    public const string EvalMeanTokenAccuracy = "eval/mean_token_accuracy";
    public const string EvalAccuracy = "eval/accuracy";
    public const string RewardsChosen = "rewards/chosen";
    public const string RewardsRejected = "rewards/rejected";
    public const string RewardsAccuracies = "rewards/accuracies";
    public const string RewardsMargins = "rewards/margins";
    public const string LogpsChosen = "logps/chosen";
    public const string LogpsRejected = "logps/rejected";
    public const string NllLoss = "nll_loss";
    public const string ObjectiveKl = "objective/kl";
    public const string ObjectiveEntropy = "objective/entropy";
    public const string ObjectiveNonScoreReward = "objective/non_score_reward";
    public const string ObjectiveRlhfReward = "objective/rlhf_reward";
    public const string ObjectiveScores = "objective/scores";
    public const string PolicyApproxKl = "policy/approxkl_avg";
    public const string PolicyClipFrac = "policy/clipfrac_avg";
    public const string PolicyEntropy = "policy/entropy_avg";
    public const string LossPolicy = "loss/policy_avg";
    public const string LossValue = "loss/value_avg";
    public const string ValueClipFrac = "val/clipfrac_avg";
    public const string ValueRatio = "val/ratio";
    public const string NumEosTokens = "val/num_eos_tokens";
    public const string Episode = "episode";
}

/// <summary>Maps a spec to the job that runs it. Each method registers here as the engine gains it.</summary>
public static class TrainingJobs
{
    private static readonly Dictionary<TrainingMethod, Func<RunSpec, ITrainingJob>> Factories = new();

    // The engine's own trainers register here, so that any host gets them by touching this class.
    static TrainingJobs()
    {
        Register(TrainingMethod.Sft, _ => new Trainers.SftJob());
        Register(TrainingMethod.Reward, _ => new Trainers.RewardJob());
        Register(TrainingMethod.Ppo, spec => new Trainers.Rl.PpoJob((PpoSpec)spec));
        Register(TrainingMethod.Rloo, spec => new Trainers.Rl.RlooJob((RlooSpec)spec));
        Register(TrainingMethod.Dpo, _ => new Trainers.Dpo.DpoJob());
    }

    /// <summary>Registers the job for a method (called once by each trainer's module initialiser).</summary>
    public static void Register(TrainingMethod method, Func<RunSpec, ITrainingJob> factory)
    {
        lock (Factories) Factories[method] = factory;
    }

    public static bool IsAvailable(TrainingMethod method)
    {
        lock (Factories) return Factories.ContainsKey(method);
    }

    /// <summary>Validates the spec and creates its job; throws <see cref="RunSpecException"/> for an invalid
    /// spec and <see cref="NotSupportedException"/> for a method the engine does not provide yet.</summary>
    public static ITrainingJob Create(RunSpec spec)
    {
        spec.EnsureValid();
        Func<RunSpec, ITrainingJob>? factory;
        lock (Factories) Factories.TryGetValue(spec.Method, out factory);
        return factory is null
            ? throw new NotSupportedException($"{spec.Method} training is not available in this build of the engine.")
            : factory(spec);
    }
}
