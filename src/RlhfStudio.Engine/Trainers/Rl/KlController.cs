namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>The KL penalty coefficient: fixed, or adapted towards a target KL with Ziegler et al.'s proportional
/// controller ("Fine-Tuning Language Models from Human Preferences", 2019; TRL's AdaptiveKLController):
/// <c>err = clip(KL / target - 1, -0.2, 0.2); coef *= 1 + err * n_steps / horizon</c>, where n_steps is the number
/// of episodes (responses) in the step that measured KL.</summary>
public sealed class KlController
{
    public KlController(double initial, double? target = null, double horizon = 10_000)
    {
        if (!(initial >= 0) || double.IsInfinity(initial)) throw new ArgumentOutOfRangeException(nameof(initial), initial, "must be 0 or positive");
        if (target is double t && !(t > 0)) throw new ArgumentOutOfRangeException(nameof(target), target, "must be positive");
        if (!(horizon > 0)) throw new ArgumentOutOfRangeException(nameof(horizon), horizon, "must be positive");
        Value = initial;
        Target = target;
        Horizon = horizon;
    }

    /// <summary>The current coefficient.</summary>
    public double Value { get; private set; }
    /// <summary>The target KL, or null for a fixed coefficient.</summary>
    public double? Target { get; }
    public double Horizon { get; }
    public bool IsAdaptive => Target is not null;

    /// <summary>Moves the coefficient after a step that measured <paramref name="currentKl"/> over <paramref name="episodes"/>
    /// responses; a fixed controller ignores it.</summary>
    public void Update(double currentKl, long episodes)
    {
        if (Target is not double target || !double.IsFinite(currentKl)) return;
        double error = Math.Clamp(currentKl / target - 1, -0.2, 0.2);
        Value *= 1 + error * episodes / Horizon;
    }

    /// <summary>Restores a coefficient saved in a checkpoint.</summary>
    public void Restore(double value)
    {
        if (!(value >= 0) || double.IsInfinity(value)) throw new ArgumentOutOfRangeException(nameof(value), value, "must be 0 or positive");
        Value = value;
    }
}
