using RlhfStudio.Engine.Trainers.Rl;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Rl;

public class RlMathTests
{
    private static Tensor F(float[] values, params long[] shape) => torch.tensor(values, shape);
    private static Tensor B(bool[] values, params long[] shape) => torch.tensor(values, shape);
    private static float[] Values(Tensor t) => t.to(ScalarType.Float32).contiguous().data<float>().ToArray();

    [Fact]
    public void Masked_mean_var_and_whiten_use_only_masked_values()
    {
        using var values = F([1, 2, 3, 100, 4, 5, -50, 6], 2, 4);
        using var mask = B([true, true, true, false, true, true, false, true], 2, 4);
        // Masked values: 1 2 3 4 5 6 -> mean 3.5, unbiased var = 17.5 / 5 = 3.5.
        Assert.Equal(3.5, MaskedStats.Mean(values, mask).item<float>(), 5);
        Assert.Equal(3.5, MaskedStats.Var(values, mask).item<float>(), 5);
        Assert.Equal(17.5 / 6, MaskedStats.Var(values, mask, unbiased: false).item<float>(), 5);
        Assert.Equal([2f, 5f], Values(MaskedStats.Mean(values, mask, 1)));

        var w = Values(MaskedStats.Whiten(values, mask));
        double sd = Math.Sqrt(3.5 + 1e-8);
        Assert.Equal((1 - 3.5) / sd, w[0], 5);
        Assert.Equal((6 - 3.5) / sd, w[7], 5);
        var unshifted = Values(MaskedStats.Whiten(values, mask, shiftMean: false));
        Assert.Equal((1 - 3.5) / sd + 3.5, unshifted[0], 5);
    }

    [Fact]
    public void Variance_of_a_single_value_is_refused()
    {
        using var values = F([1, 2], 1, 2);
        using var mask = B([true, false], 1, 2);
        Assert.Throws<InvalidOperationException>(() => MaskedStats.Var(values, mask));
    }

    [Fact]
    public void First_true_indices_and_truncation_at_the_first_stop_token()
    {
        using var bools = B([false, true, true, false, false, false, true, false, false], 3, 3);
        Assert.Equal([1L, 3L, 0L], ResponseMasks.FirstTrueIndices(bools).data<long>().ToArray());

        // Stop token 2, pad 0: row 0 stops at index 1 (the later 2 becomes pad), row 1 never stops.
        using var responses = torch.tensor(new long[] { 5, 2, 7, 2, 9, 8, 6, 4 }, [2, 4]);
        var (truncated, real) = ResponseMasks.TruncateAfterStop(responses, [2], 0);
        Assert.Equal([5L, 2, 0, 0, 9, 8, 6, 4], truncated.data<long>().ToArray());
        Assert.Equal([true, true, false, false, true, true, true, true], real.data<bool>().ToArray());
        Assert.Equal([1L, 3L], ResponseMasks.LastRealIndex(real).data<long>().ToArray());
    }

    [Fact]
    public void Score_lands_on_the_last_real_token_and_kl_is_zero_at_padding()
    {
        using var logProbs = F([-1, -2, -3, 1, -1, -1, -1, -1], 2, 4);
        using var refLogProbs = F([-1.5f, -2, -2, 1, -2, -1, -1, -3], 2, 4);
        using var real = B([true, true, true, false, true, true, true, true], 2, 4);
        using var scores = F([10, 20], 2);
        var (rewards, kl) = Advantages.TokenRewards(logProbs, refLogProbs, scores, real, klCoef: 0.1);
        // Row 0: kl = 0.5, 0, -1, (pad) 0; the score at index 2 (its last real token), nothing at the padding.
        Assert.Equal([0.5f, 0, -1, 0, 1, 0, 0, 2], Values(kl));
        var r = Values(rewards);
        Assert.Equal(-0.05, r[0], 5);
        Assert.Equal(0, r[1], 5);
        Assert.Equal(10 + 0.1, r[2], 5);
        Assert.Equal(0, r[3], 5);
        Assert.Equal(20 - 0.2, r[7], 5);
        Assert.Equal(-0.1, r[4], 5);
    }

    [Fact]
    public void Gae_matches_a_hand_computed_example_with_padding()
    {
        // One response of 3 real tokens and one padded position; gamma 0.9, lam 0.8.
        using var rewards = F([0.1f, -0.2f, 1.0f, 0f], 1, 4);
        using var values = F([0.5f, 0.4f, 0.3f, 0f], 1, 4);
        var (adv, ret) = Advantages.Gae(rewards, values, gamma: 0.9, lam: 0.8);
        double d2 = 1.0 + 0.9 * 0 - 0.3;              // 0.7: the step after the last real token bootstraps from 0
        double d1 = -0.2 + 0.9 * 0.3 - 0.4;           // -0.33
        double d0 = 0.1 + 0.9 * 0.4 - 0.5;            // -0.04
        double a2 = d2, a1 = d1 + 0.72 * a2, a0 = d0 + 0.72 * a1;
        var a = Values(adv);
        Assert.Equal(a0, a[0], 5);
        Assert.Equal(a1, a[1], 5);
        Assert.Equal(a2, a[2], 5);
        Assert.Equal(0, a[3], 6);
        var r = Values(ret);
        Assert.Equal(a0 + 0.5, r[0], 5);
        Assert.Equal(a2 + 0.3, r[2], 5);

        using var real = B([true, true, true, false], 1, 4);
        var whitened = Values(Advantages.WhitenAdvantages(adv, real));
        Assert.Equal(0, whitened[3]);
        Assert.Equal(0, whitened.Take(3).Average(), 5);
    }

    [Fact]
    public void Leave_one_out_baseline_is_the_mean_of_the_other_samples()
    {
        // k = 3 samples of 2 prompts, laid out as blocks: rows (0, 2, 4) are prompt A, rows (1, 3, 5) prompt B.
        using var rewards = F([1, 10, 2, 20, 6, 60], 6);
        var adv = Values(Advantages.LeaveOneOut(rewards, 3));
        Assert.Equal(1 - (2 + 6) / 2.0, adv[0], 5);
        Assert.Equal(2 - (1 + 6) / 2.0, adv[2], 5);
        Assert.Equal(6 - (1 + 2) / 2.0, adv[4], 5);
        Assert.Equal(10 - (20 + 60) / 2.0, adv[1], 5);
        Assert.Equal(60 - (10 + 20) / 2.0, adv[5], 5);
        Assert.Throws<ArgumentException>(() => Advantages.LeaveOneOut(rewards, 4));
        var normalized = Values(Advantages.Normalize(torch.tensor(adv)));
        Assert.Equal(0, normalized.Average(), 5);
    }

    [Fact]
    public void Adaptive_kl_controller_follows_ziegler()
    {
        var kl = new KlController(0.2, target: 6, horizon: 10_000);
        kl.Update(currentKl: 7.2, episodes: 100);                 // error = 0.2 (not clipped): 0.2 * (1 + 0.2 * 100 / 10000)
        Assert.Equal(0.2 * 1.002, kl.Value, 12);
        kl.Update(currentKl: 60, episodes: 100);                  // error clipped to +0.2
        Assert.Equal(0.2 * 1.002 * 1.002, kl.Value, 12);
        kl.Update(currentKl: 0, episodes: 1000);                  // error clipped to -0.2
        Assert.Equal(0.2 * 1.002 * 1.002 * 0.98, kl.Value, 12);

        var fixedKl = new KlController(0.05);
        fixedKl.Update(100, 100);
        Assert.Equal(0.05, fixedKl.Value);
    }

    [Fact]
    public void Guards_warn_once_for_negative_kl_collapse_and_degenerate_samples()
    {
        var guards = new RewardHackingGuards();
        string[] fine = ["42", "The answer is 7.", "13"];
        Assert.Empty(guards.Check(1, new GuardInput(0.0, 0.1, 2.0, fine)));

        Assert.Empty(guards.Check(2, new GuardInput(-0.5, 0.1, 2.0, fine)));             // one noisy step is not enough
        Assert.Empty(guards.Check(3, new GuardInput(-0.5, 0.1, 2.0, fine)));
        var kl = guards.Check(4, new GuardInput(-0.5, 0.1, 2.0, fine));                  // the third step in a row
        Assert.Equal([RewardHackingGuards.KlNegative], kl.Select(e => e.Code));
        Assert.Empty(guards.Check(5, new GuardInput(-0.5, 0.1, 2.0, fine)));             // still negative: not repeated
        Assert.Empty(guards.Check(6, new GuardInput(-0.01, 0.1, 2.0, fine)));            // within the tolerance: clears
        for (int step = 7; step < 9; step++) Assert.Empty(guards.Check(step, new GuardInput(-0.5, 0.1, 2.0, fine)));
        Assert.Single(guards.Check(9, new GuardInput(-0.5, 0.1, 2.0, fine)));            // raised again

        var collapse = guards.Check(10, new GuardInput(1.0, 0.9, 0.3, fine));
        Assert.Contains(RewardHackingGuards.EntropyCollapse, collapse.Select(e => e.Code));
        Assert.DoesNotContain(RewardHackingGuards.EntropyCollapse,
            new RewardHackingGuards().Check(1, new GuardInput(1, 0.9, 2.0, fine)).Select(e => e.Code));

        string[] hacked = ["``````````", "42", "yes yes good yes yes good yes yes good yes yes good"];
        var degenerate = guards.Check(11, new GuardInput(1.0, 0.9, 2.0, hacked));
        Assert.Contains(RewardHackingGuards.DegenerateSamples, degenerate.Select(e => e.Code));
        Assert.True(RewardHackingGuards.IsDegenerate("Sure! ``````"));
        Assert.False(RewardHackingGuards.IsDegenerate("1000000 and 99999"));
        Assert.False(RewardHackingGuards.IsDegenerate("What is 3 + 4? It is 7."));
    }
}
