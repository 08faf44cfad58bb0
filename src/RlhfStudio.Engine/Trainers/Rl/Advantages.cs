// Rewards and advantages of a rollout batch (TRL PPOTrainer.train steps 4-6, RLOOTrainer v0.11; Huang et al.,
// "The N Implementation Details of RLHF with PPO", 2023). Shapes: B responses, N response positions; `real` is the
// mask of real response tokens (everything up to and including the token that ended the response).
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

public static class Advantages
{
    /// <summary>TRL's placeholder log-probability at padding: policy and reference both carry it there, so their
    /// difference (the KL) and the PPO ratio are exactly 0 and 1 outside the real tokens.</summary>
    public const double InvalidLogProb = 1.0;

    /// <summary>Per-token rewards (B, N): the KL penalty <c>-klCoef * (logprob - ref_logprob)</c> (the k1 estimator, Schulman's
    /// "Approximating KL divergence") on every real token, and the sequence score added at the LAST REAL TOKEN of each
    /// response (the EOS when it has one). TRL adds it at <c>sequence_length + 1</c> where sequence_length is found by
    /// searching for the pad id: with pad == eos that is the EOS position (the same as here); with pad != eos it is one
    /// past the EOS, a position that holds no action. Here the end is explicit, so the score always lands on the last
    /// action taken. Zero beyond the real tokens.</summary>
    /// <returns>The rewards, and the per-token KL (B, N), 0 beyond the real tokens.</returns>
    public static (Tensor Rewards, Tensor Kl) TokenRewards(Tensor logProbs, Tensor refLogProbs, Tensor scores, Tensor real, double klCoef)
    {
        using var scope = NewDisposeScope();
        var padding = real.logical_not();
        var kl = (logProbs - refLogProbs).masked_fill(padding, 0.0);
        var rewards = kl * -klCoef;
        var last = ResponseMasks.LastRealIndex(real).clamp_min(0).unsqueeze(1);                 // (B, 1)
        var hasReal = real.any(-1).to(scores.dtype);
        rewards = rewards.scatter_add(1, last, (scores * hasReal).unsqueeze(1).to(rewards.dtype));
        return (rewards.MoveToOuterDisposeScope(), kl.MoveToOuterDisposeScope());
    }

    /// <summary>Generalised advantage estimation (Schulman et al. 2016) backwards over the response positions, as TRL:
    /// <c>delta_t = r_t + gamma * V_{t+1} - V_t; A_t = delta_t + gamma * lam * A_{t+1}</c>, with V = 0 after the last
    /// position. <paramref name="values"/> must already be 0 beyond the real tokens, so the step after the last real
    /// token bootstraps from 0: the response ended there. Returns (advantages, returns = advantages + values), unwhitened.</summary>
    public static (Tensor Advantages, Tensor Returns) Gae(Tensor rewards, Tensor values, double gamma, double lam)
    {
        using var scope = NewDisposeScope();
        long n = rewards.shape[1];
        var columns = new Tensor[n];
        Tensor last = torch.zeros([rewards.shape[0]], dtype: rewards.dtype, device: rewards.device);
        for (long t = n - 1; t >= 0; t--)
        {
            var next = t < n - 1 ? values.select(1, t + 1) : torch.zeros_like(last);
            var delta = rewards.select(1, t) + next * gamma - values.select(1, t);
            last = delta + last * (gamma * lam);
            columns[t] = last;
        }
        var advantages = torch.stack(columns, 1);
        var returns = advantages + values;
        return (advantages.MoveToOuterDisposeScope(), returns.MoveToOuterDisposeScope());
    }

    /// <summary>PPO's advantages as used in the loss: whitened over the real tokens, then 0 at padding (TRL).</summary>
    public static Tensor WhitenAdvantages(Tensor advantages, Tensor real)
    {
        using var scope = NewDisposeScope();
        return MaskedStats.Whiten(advantages, real).masked_fill(real.logical_not(), 0.0).MoveToOuterDisposeScope();
    }

    /// <summary>REINFORCE leave-one-out (Ahmadian et al. 2024; TRL RLOOTrainer v0.11): the rollout holds k samples of every
    /// prompt laid out as k consecutive blocks of the same prompts (sample j of prompt i at row j * P + i). Each sample's
    /// baseline is the mean reward of the other k - 1 samples of its prompt; advantage = reward - baseline (B).</summary>
    public static Tensor LeaveOneOut(Tensor rewards, int k)
    {
        if (k < 2) throw new ArgumentOutOfRangeException(nameof(k), k, "RLOO needs at least two samples per prompt");
        if (rewards.shape[0] % k != 0) throw new ArgumentException($"{rewards.shape[0]} rewards do not split into {k} samples per prompt");
        using var scope = NewDisposeScope();
        var grouped = rewards.reshape(k, -1);                                     // (k, prompts)
        var baseline = (grouped.sum(0, keepdim: true) - grouped) / (k - 1);
        return (grouped - baseline).flatten().MoveToOuterDisposeScope();
    }

    /// <summary>(x - mean) / (std + 1e-8) with the unbiased std, as TRL's normalize_advantage.</summary>
    public static Tensor Normalize(Tensor x)
    {
        using var scope = NewDisposeScope();
        return ((x - x.mean()) / (x.std() + 1e-8)).MoveToOuterDisposeScope();
    }
}
