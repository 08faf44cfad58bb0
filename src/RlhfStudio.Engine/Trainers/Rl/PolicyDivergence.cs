// How far a tuned policy has moved from its reference, measured the way RL training measures it (TRL objective/kl):
// responses sampled from the policy at the rollout temperature, KL = the sum over each response's real tokens of
// log pi(token) - log ref(token) (both from logits divided by the temperature, as in a rollout), averaged over the
// responses. The same estimator for a PPO, RLOO or DPO model, so their distances from the SFT model compare.
using RlhfStudio.Engine.Models;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <param name="MeanKl">Mean over responses of the summed per-token log-ratio (nats per response).</param>
/// <param name="MeanResponseTokens">Mean real tokens per response (the EOS included).</param>
public sealed record DivergenceReport(int Responses, double MeanKl, double MeanResponseTokens);

public static class PolicyDivergence
{
    /// <summary>Samples one response per prompt from <paramref name="policy"/> (seeded) and averages its log-ratio against
    /// <paramref name="reference"/>. Both models run in eval mode and get their previous mode back.</summary>
    public static DivergenceReport Measure(CausalLanguageModel policy, CausalLanguageModel reference, IReadOnlyList<RlPrompt> prompts,
        RolloutSettings settings, long seed, CancellationToken cancel = default)
    {
        if (prompts.Count == 0) throw new ArgumentException("no prompts to sample", nameof(prompts));
        if (policy.Config.VocabSize != reference.Config.VocabSize)
            throw new ArgumentException($"the policy has {policy.Config.VocabSize} tokens in its vocabulary, the reference {reference.Config.VocabSize}: " +
                                        "they do not share a tokenizer, so their log-probabilities cannot be compared");
        bool policyTraining = policy.training, referenceTraining = reference.training;
        policy.eval();
        reference.eval();
        try
        {
            double kl = 0, tokens = 0;
            int size = Math.Max(1, settings.ForwardBatchSize);
            for (int start = 0; start < prompts.Count; start += size)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var chunk = prompts.Skip(start).Take(size).ToList();
                var (batch, real) = RolloutSampler.Sample(policy, chunk, settings, seed + start, cancel);
                var logProbs = SequenceForward.ResponseLogProbs(policy, batch, real, settings.Temperature);
                var refLogProbs = SequenceForward.ResponseLogProbs(reference, batch, real, settings.Temperature);
                var notReal = real.logical_not();
                kl += (logProbs - refLogProbs).masked_fill(notReal, 0.0).to(ScalarType.Float64).sum().item<double>();
                tokens += real.sum().item<long>();
                GC.Collect(0);
            }
            return new DivergenceReport(prompts.Count, kl / prompts.Count, tokens / prompts.Count);
        }
        finally
        {
            if (policyTraining) policy.train();
            if (referenceTraining) reference.train();
        }
    }
}
