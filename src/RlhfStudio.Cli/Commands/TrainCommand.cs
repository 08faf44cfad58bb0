using System.Diagnostics;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Cli.Commands;

/// <summary><c>train sft|reward|ppo|rloo|dpo --config run.json</c>: runs a job from the same RunSpec JSON the studio uses. Ctrl-C asks the
/// job to stop at the next step boundary and keep a checkpoint (exit code 130); a second Ctrl-C ends the process.
/// Model paths in the config are relative to the working directory.</summary>
internal static class TrainCommand
{
    public const int CancelledExitCode = 130;

    public static CommandSpec Sft { get; } = Spec(TrainingMethod.Sft, "supervised fine-tuning");
    public static CommandSpec Reward { get; } = Spec(TrainingMethod.Reward, "reward modelling on preference pairs");
    public static CommandSpec Ppo { get; } = Spec(TrainingMethod.Ppo, "PPO from an SFT model against a reward model or a built-in scorer");
    public static CommandSpec Rloo { get; } = Spec(TrainingMethod.Rloo, "RLOO (k samples per prompt, leave-one-out baseline) from an SFT model");
    public static CommandSpec Dpo { get; } = Spec(TrainingMethod.Dpo, "direct preference optimisation (sigmoid loss) on preference pairs");

    private static CommandSpec Spec(TrainingMethod method, string what) => new($"train {Name(method)}", [], ["config", "output", "resume", "threads"], [],
        $"{what} from a run spec JSON (as the studio saves it); --resume CHECKPOINT or auto (the newest in --output)",
        (args, output) => Run(args, output, method));

    private static string Name(TrainingMethod method) => method.ToString().ToLowerInvariant();

    private static int Run(Arguments args, CliOutput output, TrainingMethod method)
    {
        var configPath = args.String("config") ?? throw new UsageException("--config is required (a run spec JSON file)");
        if (!File.Exists(configPath)) throw new IOException($"{configPath}: config file not found");
        RunSpec spec;
        try
        {
            spec = RunSpec.FromJson(File.ReadAllText(configPath));
        }
        catch (RunSpecException e)
        {
            output.Error.WriteLine($"error: {configPath} is not a valid run spec:");
            foreach (var error in e.Errors) output.Error.WriteLine($"  {error}");
            return 1;
        }
        if (spec.Method != method)
            throw new UsageException($"{configPath} is a {Name(spec.Method)} run spec (\"method\": \"{Name(spec.Method)}\"); run it with \"train {Name(spec.Method)}\"");
        if (spec.Model.RunId is not null || spec.Model.Stage is not null)
            throw new UsageException($"{configPath}: model {spec.Model} refers to a studio run; the command line needs model.path (e.g. that run's final/ folder) or model.preset");

        var outputDir = args.String("output") ?? Path.Combine("runs", string.IsNullOrWhiteSpace(spec.Name)
            ? $"{Name(method)}-{DateTime.Now:yyyyMMdd-HHmmss}" : spec.Name);
        var resumeFrom = ResumeFrom(args.String("resume"), outputDir, output);
        CommandHelpers.Threads(args);

        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (cancel.IsCancellationRequested) return;   // the second Ctrl-C ends the process
            e.Cancel = true;
            cancel.Cancel();
            output.Error.WriteLine("\nstopping at the end of this step and saving a checkpoint (Ctrl-C again to quit at once)");
        };
        Console.CancelKeyPress += onCancel;
        var reporter = new ConsoleReporter(output, interactive: ReferenceEquals(output.Error, Console.Error) && !Console.IsErrorRedirected);
        var clock = Stopwatch.StartNew();
        RunOutcome outcome;
        try
        {
            output.Out.WriteLine($"{Name(method)} run \"{spec.Name}\" from {configPath}, output in {outputDir}" + (resumeFrom is null ? "" : $", resuming from {resumeFrom}"));
            outcome = TrainingJobs.Create(spec).Run(new RunContext(spec, outputDir, reporter, cancel.Token, resumeFrom));
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
            reporter.Finish();
        }
        var took = ConsoleReporter.Duration(clock.Elapsed);
        switch (outcome.State)
        {
            case RunEndState.Completed:
                output.Out.WriteLine($"done in {took}: final model in {outcome.FinalModel}" + (outcome.LastCheckpoint is null ? "" : $", last checkpoint {outcome.LastCheckpoint}"));
                return 0;
            case RunEndState.Cancelled:
                output.Out.WriteLine($"cancelled after {took}; checkpoint {outcome.LastCheckpoint}. Continue with: " +
                    $"rlhfstudio train {Name(method)} --config {configPath} --output {outputDir} --resume auto");
                return CancelledExitCode;
            default:
                output.Error.WriteLine($"error: {outcome.Message}");
                return 1;
        }
    }

    // --resume PATH must be a complete checkpoint; "auto" takes the newest complete one in the output folder, if any.
    // Without --resume, an output folder that already holds checkpoints is refused rather than mixed with a new run.
    private static string? ResumeFrom(string? resume, string outputDir, CliOutput output)
    {
        var existing = Directory.Exists(outputDir) ? Checkpoints.ListComplete(outputDir) : [];
        if (resume is null)
        {
            if (existing.Count > 0)
                throw new UsageException($"{outputDir} already holds checkpoints ({Path.GetFileName(existing[^1].Path)}); continue with --resume auto, or choose another --output");
            return null;
        }
        if (resume == "auto")
        {
            if (existing.Count == 0)
            {
                output.Out.WriteLine($"no checkpoint in {outputDir} yet: starting from the beginning");
                return null;
            }
            return existing.MaxBy(c => c.Step).Path;
        }
        if (!CheckpointFolder.IsComplete(resume))
            throw new UsageException($"{resume}: not a complete checkpoint folder (no {CheckpointFolder.ManifestFile})");
        return resume;
    }
}
