using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Tests.Browser;

/// <summary>A test that needs the engine to train <see cref="Method"/>: reported as skipped (with the reason) while the
/// engine has no job registered for it, and run as a normal test as soon as the trainer is part of the build.
/// Trainers register from module initialisers, which run when the engine assembly loads (here, on first use).</summary>
public sealed class RequiresTrainerFactAttribute : FactAttribute
{
    public RequiresTrainerFactAttribute(TrainingMethod method)
    {
        Method = method;
        if (!TrainingJobs.IsAvailable(method))
            Skip = $"the engine has no {method} trainer in this build yet";
    }

    public TrainingMethod Method { get; }
}
