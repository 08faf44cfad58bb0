// The two objectives that share the rollout and the optimisation loop: PPO with a value model (TRL PPOTrainer) and
// REINFORCE leave-one-out (TRL RLOOTrainer). Each turns a rollout into training targets, then gives the loss of a
// micro-batch of its rows with the per-micro-batch statistics TRL logs.
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>Statistics of one micro-batch, averaged over the step as TRL does (each a masked mean over real tokens).</summary>
public sealed record MicroBatchStats(double PolicyLoss, double ValueLoss, double ClipFraction, double ValueClipFraction, double ApproxKl,
    double Entropy, double Ratio);

public interface IRlObjective : IDisposable
{
    /// <summary>Responses sampled per prompt (1 for PPO, k for RLOO).</summary>
    int SamplesPerPrompt { get; }

    /// <summary>Computes the training targets of <paramref name="rollout"/> at KL coefficient <paramref name="klCoef"/>
    /// and returns the objective/* metrics of the step.</summary>
    IReadOnlyDictionary<string, double> Prepare(Rollout rollout, double klCoef);

    /// <summary>The loss (scalar, with its graph) of rollout rows <paramref name="rows"/>, and its statistics.</summary>
    (Tensor Loss, MicroBatchStats Stats) Loss(RlModels models, Rollout rollout, Tensor rows, double temperature);
}

/// <summary>Per-step objective metrics shared by both methods.</summary>
internal static class ObjectiveMetrics
{
    public static Dictionary<string, double> Of(Rollout rollout, Tensor sequenceKl, Tensor nonScoreReward)
    {
        using var scope = NewDisposeScope();
        // objective/entropy is the mean over responses of the summed -logprob of the sampled tokens (a one-sample
        // estimate of the sequence entropy); TRL sums INVALID_LOGPROB at padding too, which subtracts 1 per pad token.
        var entropy = rollout.LogProbs.neg().masked_fill(rollout.Real.logical_not(), 0.0).sum(1).mean();
        double scores = rollout.Scores.mean().item<float>();
        double nonScore = nonScoreReward.mean().item<float>();
        return new Dictionary<string, double>(StringComparer.Ordinal)
        {
            [Jobs.MetricNames.ObjectiveKl] = sequenceKl.mean().item<float>(),
            [Jobs.MetricNames.ObjectiveEntropy] = entropy.item<float>(),
            [Jobs.MetricNames.ObjectiveNonScoreReward] = nonScore,
            [Jobs.MetricNames.ObjectiveRlhfReward] = nonScore + scores,
            [Jobs.MetricNames.ObjectiveScores] = scores,
        };
    }

    /// <summary>Policy-side statistics of a micro-batch from its per-token entropies, new and old log-probabilities.</summary>
    public static (double ClipFraction, double ApproxKl, double Entropy, double Ratio) Policy(Tensor tokenEntropy, Tensor diff, Tensor ratio,
        Tensor pgLosses, Tensor pgLossesClipped, Tensor real)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var clip = MaskedStats.Mean(pgLossesClipped.gt(pgLosses).to(ScalarType.Float32), real).item<float>();
        var approxKl = 0.5 * MaskedStats.Mean(diff.detach().square(), real).item<float>();
        var entropy = MaskedStats.Mean(tokenEntropy.detach(), real).item<float>();
        var meanRatio = MaskedStats.Mean(ratio.detach(), real).item<float>();
        return (clip, approxKl, entropy, meanRatio);
    }
}

/// <summary>PPO with per-token KL penalty, GAE and a clipped value loss (TRL PPOTrainer, v0.11-v0.19).</summary>
public sealed class PpoObjective(double vfCoef, double clipRange, double clipRangeValue, double gamma, double lam, bool whitenRewards) : IRlObjective
{
    private Tensor? _advantages;
    private Tensor? _returns;

    public int SamplesPerPrompt => 1;
    /// <summary>After <see cref="Prepare"/>: whitened advantages (B, N), 0 at padding.</summary>
    public Tensor? Advantages => _advantages;
    public Tensor? Returns => _returns;

    public IReadOnlyDictionary<string, double> Prepare(Rollout rollout, double klCoef)
    {
        if (rollout.Values is null) throw new InvalidOperationException("PPO needs the value model's values in the rollout");
        DisposeTargets();
        using var scope = NewDisposeScope();
        // 4. rewards: per-token KL penalty, score at the last real token.
        var (rewards, kl) = Rl.Advantages.TokenRewards(rollout.LogProbs, rollout.RefLogProbs, rollout.Scores, rollout.Real, klCoef);
        var nonScore = (kl * -klCoef).sum(1);
        // 5. optional reward whitening (scale only, TRL shift_mean=False).
        if (whitenRewards) rewards = MaskedStats.Whiten(rewards, rollout.Real, shiftMean: false).masked_fill(rollout.Real.logical_not(), 0.0);
        // 6. advantages and returns; the advantages are whitened over real tokens for the loss, the returns are not.
        var (advantages, returns) = Rl.Advantages.Gae(rewards, rollout.Values, gamma, lam);
        _advantages = Rl.Advantages.WhitenAdvantages(advantages, rollout.Real).DetachFromDisposeScope();
        _returns = returns.DetachFromDisposeScope();
        return ObjectiveMetrics.Of(rollout, kl.sum(1), nonScore);
    }

    public (Tensor Loss, MicroBatchStats Stats) Loss(RlModels models, Rollout rollout, Tensor rows, double temperature)
    {
        if (_advantages is null || _returns is null || !models.HasValues) throw new InvalidOperationException("call Prepare first; PPO needs a value model or head");
        using var scope = NewDisposeScope();
        var batch = new SequenceBatch(rollout.Batch.Ids.index_select(0, rows), rollout.Batch.AttentionMask.index_select(0, rows), rollout.Batch.PromptLength);
        var real = rollout.Real.index_select(0, rows);
        var padding = real.logical_not();
        var oldLogProbs = rollout.LogProbs.index_select(0, rows);
        var oldValues = rollout.Values!.index_select(0, rows);
        var advantages = _advantages.index_select(0, rows);
        var returns = _returns.index_select(0, rows);

        // With a value head, one trunk pass for both: the head reads the policy's own hidden states.
        var predicting = SequenceForward.PredictingHidden(models.Policy, batch);
        var vpred = models.ValueHead is { } head
            ? head.Values(predicting).masked_fill(padding, 0.0)
            : SequenceForward.ResponseValues(models.Value!, batch, real);
        var (tokenLogProbs, tokenEntropy) = SequenceForward.TokenLogProbs(models.Policy, predicting, batch.Responses, temperature, withEntropy: true);
        var newLogProbs = tokenLogProbs.masked_fill(padding, Rl.Advantages.InvalidLogProb);
        // Clipped value loss: 0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2).
        var vpredClipped = vpred.minimum(oldValues + clipRangeValue).maximum(oldValues - clipRangeValue);
        var vfLosses1 = (vpred - returns).square();
        var vfLosses2 = (vpredClipped - returns).square();
        var vfLoss = MaskedStats.Mean(vfLosses1.maximum(vfLosses2), real) * 0.5;
        // Clipped surrogate: max(-A * ratio, -A * clip(ratio, 1 +- c)).
        var diff = newLogProbs - oldLogProbs;
        var ratio = diff.exp();
        var pgLosses = -advantages * ratio;
        var pgLosses2 = -advantages * ratio.clamp(1.0 - clipRange, 1.0 + clipRange);
        var pgLoss = MaskedStats.Mean(pgLosses.maximum(pgLosses2), real);
        var loss = pgLoss + vfLoss * vfCoef;

        var (clip, approxKl, entropy, meanRatio) = ObjectiveMetrics.Policy(tokenEntropy!, diff, ratio, pgLosses, pgLosses2, real);
        double vfClip;
        using (no_grad()) vfClip = MaskedStats.Mean(vfLosses2.gt(vfLosses1).to(ScalarType.Float32), real).item<float>();
        var stats = new MicroBatchStats(pgLoss.item<float>(), vfLoss.item<float>(), clip, vfClip, approxKl, entropy, meanRatio);
        return (loss.MoveToOuterDisposeScope(), stats);
    }

    private void DisposeTargets()
    {
        _advantages?.Dispose();
        _returns?.Dispose();
        _advantages = _returns = null;
    }

    public void Dispose() => DisposeTargets();
}

/// <summary>REINFORCE leave-one-out (TRL RLOOTrainer v0.11): sequence reward = score - klCoef * sum(KL), baseline = the
/// mean reward of the other k - 1 samples of the same prompt. The loss is PPO's clipped surrogate with the sequence
/// advantage broadcast over its tokens (per-token ratios, masked mean over real tokens); with one PPO epoch and one
/// mini-batch the ratio is 1 and this is plain REINFORCE with the leave-one-out baseline. (TRL's RLOO clips the ratio
/// of whole-sequence probabilities instead, which saturates the clip on long responses.)</summary>
public sealed class RlooObjective(int k, double clipRange, bool normalizeAdvantage) : IRlObjective
{
    private Tensor? _advantages;

    public int SamplesPerPrompt => k;
    /// <summary>After <see cref="Prepare"/>: the sequence advantages (B).</summary>
    public Tensor? Advantages => _advantages;

    public IReadOnlyDictionary<string, double> Prepare(Rollout rollout, double klCoef)
    {
        _advantages?.Dispose();
        using var scope = NewDisposeScope();
        var kl = (rollout.LogProbs - rollout.RefLogProbs).masked_fill(rollout.Real.logical_not(), 0.0);
        var sequenceKl = kl.sum(1);
        var nonScore = sequenceKl * -klCoef;
        var reward = rollout.Scores + nonScore;
        var advantages = Rl.Advantages.LeaveOneOut(reward, k);
        if (normalizeAdvantage) advantages = Rl.Advantages.Normalize(advantages);
        _advantages = advantages.DetachFromDisposeScope();
        return ObjectiveMetrics.Of(rollout, sequenceKl, nonScore);
    }

    public (Tensor Loss, MicroBatchStats Stats) Loss(RlModels models, Rollout rollout, Tensor rows, double temperature)
    {
        if (_advantages is null) throw new InvalidOperationException("call Prepare first");
        using var scope = NewDisposeScope();
        var batch = new SequenceBatch(rollout.Batch.Ids.index_select(0, rows), rollout.Batch.AttentionMask.index_select(0, rows), rollout.Batch.PromptLength);
        var real = rollout.Real.index_select(0, rows);
        var oldLogProbs = rollout.LogProbs.index_select(0, rows);
        var advantages = _advantages.index_select(0, rows).unsqueeze(1);                     // (b, 1): one per sequence

        var (tokenLogProbs, tokenEntropy) = SequenceForward.TokenLogProbs(models.Policy, SequenceForward.PredictingHidden(models.Policy, batch), batch.Responses,
            temperature, withEntropy: true);
        var newLogProbs = tokenLogProbs.masked_fill(real.logical_not(), Rl.Advantages.InvalidLogProb);
        var diff = newLogProbs - oldLogProbs;
        var ratio = diff.exp();
        var pgLosses = -advantages * ratio;
        var pgLosses2 = -advantages * ratio.clamp(1.0 - clipRange, 1.0 + clipRange);
        var pgLoss = MaskedStats.Mean(pgLosses.maximum(pgLosses2), real);
        var (clip, approxKl, entropy, meanRatio) = ObjectiveMetrics.Policy(tokenEntropy!, diff, ratio, pgLosses, pgLosses2, real);
        var stats = new MicroBatchStats(pgLoss.item<float>(), 0, clip, 0, approxKl, entropy, meanRatio);
        return (pgLoss.MoveToOuterDisposeScope(), stats);
    }

    public void Dispose() => _advantages?.Dispose();
}
