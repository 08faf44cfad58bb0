using RlhfStudio.Engine.Trainers.Rl;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Rl;

public class PolicyDivergenceTests
{
    [Fact]
    public void A_policy_is_at_kl_zero_from_itself_and_the_estimate_matches_the_rollout_kl()
    {
        using var policy = RlTestKit.Policy(seed: 3);
        using var same = RlTestKit.Policy(seed: 3);
        var prompts = RlTestKit.Prompts(6);
        var settings = RlTestKit.Settings(maxNewTokens: 6, forwardBatch: 3);
        var self = PolicyDivergence.Measure(policy, same, prompts, settings, seed: 5);
        Assert.Equal(0, self.MeanKl);
        Assert.Equal(6, self.Responses);
        Assert.InRange(self.MeanResponseTokens, 1, 6);

        // Against another model: the summed log-ratio of the same sampled responses, computed here by hand per chunk.
        using var other = RlTestKit.Policy(seed: 4);
        var measured = PolicyDivergence.Measure(policy, other, prompts, settings, seed: 5);
        double expected = 0;
        using (no_grad())
            for (int start = 0; start < prompts.Count; start += 3)
            {
                using var scope = NewDisposeScope();
                var (batch, real) = RolloutSampler.Sample(policy, prompts.Skip(start).Take(3).ToList(), settings, 5 + start);
                for (int row = 0; row < 3; row++)
                {
                    var lp = SequenceForward.ResponseLogProbs(policy, batch, real, settings.Temperature)[row];
                    var rlp = SequenceForward.ResponseLogProbs(other, batch, real, settings.Temperature)[row];
                    var keep = real[row];
                    expected += (lp - rlp).masked_select(keep).sum().item<float>();
                }
            }
        Assert.Equal(expected / prompts.Count, measured.MeanKl, 4);
        Assert.True(measured.MeanKl > 0, $"two different models sampled from the first should be apart, got {measured.MeanKl}");
        Assert.True(policy.training && other.training);   // modes restored
    }

    [Fact]
    public void Models_with_different_vocabularies_are_refused_with_a_message()
    {
        using var policy = RlTestKit.Policy();
        using var bigger = new Engine.Models.CausalLanguageModel(RlTestKit.Config() with { VocabSize = RlTestKit.Config().VocabSize + 8 });
        var error = Assert.Throws<ArgumentException>(() => PolicyDivergence.Measure(policy, bigger, RlTestKit.Prompts(2), RlTestKit.Settings(), seed: 1));
        Assert.Contains("vocabulary", error.Message);
    }
}
