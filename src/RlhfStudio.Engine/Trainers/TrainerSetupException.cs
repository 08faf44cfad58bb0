using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Trainers;

/// <summary>A run cannot start as specified (unusable tokenizer, adapter that does not fit the model, too little
/// data ...). The message names the problem in words a user can act on.</summary>
public sealed class TrainerSetupException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Turns the exceptions that mean "the user's input cannot be used" into a failed outcome, so a job never
/// throws for something the user can fix (see the rules in RunContract.cs). Anything else is a bug and propagates.</summary>
public static class JobFailures
{
    public static RunOutcome Guard(Func<RunOutcome> run)
    {
        try
        {
            return run();
        }
        catch (Exception e) when (Describe(e) is string message)
        {
            return RunOutcome.Failed(message);
        }
    }

    /// <summary>The user-facing message for an input problem, or null when <paramref name="e"/> is not one.</summary>
    public static string? Describe(Exception e) => e switch
    {
        ModelLoadException => $"Cannot load the model: {e.Message}",
        TokenizerLoadException => $"Cannot load the tokenizer: {e.Message}",
        DatasetException => $"Cannot use the dataset: {e.Message}",
        CheckpointException => $"Cannot use the checkpoint: {e.Message}",
        TrainerSetupException => e.Message,
        IOException or UnauthorizedAccessException => $"File access failed: {e.Message}",
        _ => null,
    };
}
