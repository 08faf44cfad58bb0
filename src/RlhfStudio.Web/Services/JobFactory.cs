using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Services;

/// <summary>Creates the engine job for a spec. The engine's <see cref="TrainingJobs"/> by default;
/// replaceable (tests give the run service jobs of their own).</summary>
public class JobFactory
{
    public virtual ITrainingJob Create(RunSpec spec) => TrainingJobs.Create(spec);
}
