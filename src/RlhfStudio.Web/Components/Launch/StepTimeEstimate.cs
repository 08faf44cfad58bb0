using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Components.Launch;

/// <summary>A rough time per optimisation step from the machine's measured matmul speed. Training FLOPs follow the
/// usual 6 x parameters x tokens (forward 2, backward 4; with LoRA or frozen layers the weight gradients are skipped:
/// about 4 x); generation costs 2 x parameters per generated token. Real throughput is a fraction of the matmul
/// peak: <see cref="TrainEfficiency"/> for training, <see cref="GenerationEfficiency"/> for token-by-token decoding,
/// which is memory-bound on a CPU.</summary>
public sealed record StepTimeEstimate(double TrainFlops, double GenerationFlops, double ScoringFlops, double PeakGflops, string Formula)
{
    public const double TrainEfficiency = 0.35;
    public const double GenerationEfficiency = 0.10;

    public double Seconds => (TrainFlops + ScoringFlops) / (PeakGflops * 1e9 * TrainEfficiency)
                             + GenerationFlops / (PeakGflops * 1e9 * GenerationEfficiency);

    /// <summary>Total for the run when the number of steps is known.</summary>
    public double? TotalSeconds(long steps) => steps > 0 ? steps * Seconds : null;

    public static StepTimeEstimate Compute(RunSpec spec, long parameters, double peakGflops)
    {
        double p = parameters;
        double tokens = (double)spec.Training.BatchSize * spec.Training.GradientAccumulation * spec.MaxLength;
        double train = spec.Adapter.Kind == AdapterKind.Full ? 6 : 4;
        string t = train == 6 ? "6" : "4 (adapters: no weight gradients)";
        switch (spec)
        {
            case RewardSpec:
                // chosen and rejected are both scored: two sequences per pair
                return new(train * p * 2 * tokens, 0, 0, peakGflops,
                    $"{t} × params × 2 (chosen + rejected) × batch × accumulation × maxLength");
            case DpoSpec:
                // policy on chosen + rejected, plus a reference forward on both
                return new(train * p * 2 * tokens, 0, 2 * p * 2 * tokens, peakGflops,
                    $"{t} × params × 2 × batch × accumulation × maxLength + reference forward 2 × params × 2 × batch × accumulation × maxLength");
            case RlSpec rl:
            {
                int k = rl is RlooSpec r ? r.RlooK : 1;
                double sequences = (double)spec.Training.BatchSize * spec.Training.GradientAccumulation * k;
                double seqTokens = sequences * spec.MaxLength;
                double generated = sequences * spec.Sampling.MaxNewTokens;
                // PPO trains a value model of the same size as the policy
                double models = rl is PpoSpec ? 2 : 1;
                double trainFlops = rl.NumPpoEpochs * train * p * seqTokens * models;
                // reference log-probs, reward scores (and values for PPO) on each rollout
                double scoring = (2 + models) * 2 * p * seqTokens;
                return new(trainFlops, 2 * p * generated, scoring, peakGflops,
                    $"generation 2 × params × batch{(k > 1 ? " × k" : "")} × maxNewTokens + epochs × {t} × params × batch{(k > 1 ? " × k" : "")} × maxLength"
                    + (rl is PpoSpec ? " × 2 (policy + value)" : "") + " + forward passes of reference and reward models");
            }
            default:
                return new(train * p * tokens, 0, 0, peakGflops, $"{t} × params × batch × accumulation × maxLength");
        }
    }
}
