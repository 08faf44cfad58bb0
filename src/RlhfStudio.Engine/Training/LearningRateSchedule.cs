using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Training;

/// <summary>The learning rate at each optimisation step, exactly as transformers' schedulers
/// (<c>get_cosine_schedule_with_warmup</c>, <c>get_linear_schedule_with_warmup</c>,
/// <c>get_constant_schedule_with_warmup</c>) wrapped in a <c>LambdaLR</c>: step <c>s</c> (0-based: the first
/// optimiser step is step 0) uses <c>peak * lambda(s)</c>. So with warmup the very first update has learning rate 0,
/// as in transformers. <see cref="LrSchedule.Constant"/> warms up too when the warmup ratio is above 0
/// (transformers' "constant_with_warmup"; with ratio 0 it is plain "constant").</summary>
public sealed record LearningRateSchedule
{
    public LrSchedule Kind { get; }
    public double PeakLearningRate { get; }
    public long TotalSteps { get; }
    public long WarmupSteps { get; }

    public LearningRateSchedule(LrSchedule kind, double peakLearningRate, long totalSteps, long warmupSteps)
    {
        if (totalSteps < 1) throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, "must be at least 1");
        if (warmupSteps < 0 || warmupSteps > totalSteps)
            throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, $"must be between 0 and the total steps ({totalSteps})");
        if (!(peakLearningRate >= 0)) throw new ArgumentOutOfRangeException(nameof(peakLearningRate), peakLearningRate, "must be 0 or positive");
        Kind = kind;
        PeakLearningRate = peakLearningRate;
        TotalSteps = totalSteps;
        WarmupSteps = warmupSteps;
    }

    /// <summary>The schedule for <paramref name="settings"/> over <paramref name="totalSteps"/> steps, with
    /// transformers' warmup rounding: <c>ceil(total * warmup_ratio)</c> (TrainingArguments.get_warmup_steps).</summary>
    public static LearningRateSchedule For(TrainingSettings settings, long totalSteps) =>
        new(settings.Schedule, settings.LearningRate, totalSteps, WarmupStepsFor(settings.WarmupRatio, totalSteps));

    public static long WarmupStepsFor(double warmupRatio, long totalSteps) =>
        Math.Min(totalSteps, (long)Math.Ceiling(totalSteps * warmupRatio));

    /// <summary>The multiplier of the peak rate at 0-based step <paramref name="step"/> (LambdaLR's lr_lambda).</summary>
    public double Factor(long step)
    {
        if (step < WarmupSteps) return (double)step / Math.Max(1, WarmupSteps);
        double decaySteps = Math.Max(1, TotalSteps - WarmupSteps);
        return Kind switch
        {
            // num_cycles = 0.5: half a cosine wave from 1 down to 0.
            LrSchedule.Cosine => Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * 0.5 * 2.0 * ((step - WarmupSteps) / decaySteps)))),
            LrSchedule.Linear => Math.Max(0.0, (TotalSteps - step) / decaySteps),
            LrSchedule.Constant => 1.0,
            _ => throw new ArgumentOutOfRangeException(nameof(Kind), Kind, "unknown schedule"),
        };
    }

    /// <summary>The learning rate used by the update at 0-based step <paramref name="step"/>.</summary>
    public double At(long step) => PeakLearningRate * Factor(step);
}
