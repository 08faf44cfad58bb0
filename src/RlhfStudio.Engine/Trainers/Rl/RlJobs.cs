// The PPO and RLOO jobs: preflight and models (RlSetup), the shared loop (RlTrainer), the final model.
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Trainers;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>Runs an RL spec with the objective its method uses.</summary>
public abstract class RlJob<TSpec>(TSpec spec) : ITrainingJob where TSpec : RlSpec
{
    /// <summary>Folder of the final policy under the run's output directory (a merged Hugging Face model).</summary>
    public const string FinalFolder = "final";

    public TSpec Spec { get; } = spec;

    protected abstract IRlObjective CreateObjective();

    public RunOutcome Run(RunContext context)
    {
        if (context.Spec is not TSpec) return RunOutcome.Failed($"this job runs {typeof(TSpec).Name} specs, not {context.Spec.GetType().Name}");
        RlModels? models = null;
        try
        {
            Directory.CreateDirectory(context.OutputDirectory);
            PromptSet prompts;
            (models, prompts) = RlSetup.Build(Spec, context.Reporter);
            context.Reporter.Event(RunEvent.Info($"{Spec.Method}: {prompts.Count} prompts, scores from {models.Scorer.Name}, reference = " +
                (models.ReferenceCopy is null ? "the policy with its LoRA adapters disabled" : "a frozen copy of the starting weights") +
                (models.Value is not null ? ", value model trained alongside" : models.ValueHead is not null ? ", value head on the policy's trunk" : "") +
                (Spec is PpoSpec { FreezeActorSteps: > 0 } frozen ? $", policy frozen for the first {frozen.FreezeActorSteps} steps (value warm-up)" : "") + $"; {Freezing.Report(models.Policy)}"));
            using var objective = CreateObjective();
            var trainer = new RlTrainer(context, models, prompts, objective);
            var outcome = trainer.Run();
            if (outcome.State != RunEndState.Completed) return outcome;
            var final = models.PolicyPart.SaveFinal(Path.Combine(context.OutputDirectory, FinalFolder), Spec.Method);
            context.Reporter.Event(RunEvent.Info($"final policy saved in {final}", trainer.GlobalStep));
            return RunOutcome.Completed(final, outcome.LastCheckpoint);
        }
        catch (Exception e) when (e is RlSetupException or TrainerSetupException or ModelLoadException or DatasetException or TokenizerLoadException or CheckpointException)
        {
            return RunOutcome.Failed(e.Message);
        }
        finally
        {
            models?.Dispose();
        }
    }

}

public sealed class PpoJob(PpoSpec spec) : RlJob<PpoSpec>(spec)
{
    protected override IRlObjective CreateObjective() =>
        new PpoObjective(Spec.VfCoef, Spec.ClipRange, Spec.ClipRangeValue, Spec.Gamma, Spec.Lam, Spec.WhitenRewards);
}

public sealed class RlooJob(RlooSpec spec) : RlJob<RlooSpec>(spec)
{
    protected override IRlObjective CreateObjective() => new RlooObjective(Spec.RlooK, Spec.ClipRange, Spec.NormalizeAdvantage);
}
