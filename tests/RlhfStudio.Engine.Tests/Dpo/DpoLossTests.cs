using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers.Dpo;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Dpo;

public class DpoLossTests
{
    // Two pairs, beta 0.1. Pair 1: h = (-5 - -7) - (-6 - -6) = 2, the policy prefers chosen; pair 2: h = -2.
    private static readonly float[] PolicyChosen = [-5, -8], PolicyRejected = [-7, -6], RefChosen = [-6, -7], RefRejected = [-6, -7];

    private static DpoLossResult Loss(double labelSmoothing, out Tensor pc, out Tensor pr)
    {
        pc = torch.tensor(PolicyChosen);
        pr = torch.tensor(PolicyRejected);
        return DpoLoss.Sigmoid(pc, pr, torch.tensor(RefChosen), torch.tensor(RefRejected), beta: 0.1, labelSmoothing);
    }

    [Fact]
    public void The_sigmoid_loss_rewards_margins_and_accuracies_match_a_hand_computation()
    {
        using var scope = NewDisposeScope();
        var result = Loss(0, out var pc, out var pr);
        // -logsigmoid(+-0.2) = ln(1 + e^-+0.2): 0.598138869 and 0.798138869.
        var losses = result.Losses.data<float>().ToArray();
        Assert.Equal(0.598138869, losses[0], 6);
        Assert.Equal(0.798138869, losses[1], 6);
        Assert.Equal([0.1f, -0.1f], result.ChosenRewards.data<float>().ToArray().Select(v => MathF.Round(v, 6)));
        Assert.Equal([-0.1f, 0.1f], result.RejectedRewards.data<float>().ToArray().Select(v => MathF.Round(v, 6)));
        var sums = DpoLoss.MetricSums(result, pc, pr);
        Assert.Equal(1, sums[DpoLoss.AccuracyMetric]);                 // only pair 1 has chosen reward > rejected
        Assert.Equal(0.2 - 0.2, sums[DpoLoss.MarginsMetric], 6);        // margins 0.2 and -0.2
        Assert.Equal(0, sums[DpoLoss.ChosenMetric], 6);
        Assert.Equal(-13, sums[DpoLoss.LogpsChosenMetric], 6);
        Assert.Equal(-13, sums[DpoLoss.LogpsRejectedMetric], 6);
        Assert.Null(result.ChosenNll);                                   // plain DPO: no RPO term, no nll_loss metric
        Assert.False(sums.ContainsKey(DpoLoss.NllMetric));
    }

    [Fact]
    public void Label_smoothing_mixes_in_the_loss_of_the_flipped_preference()
    {
        using var scope = NewDisposeScope();
        var losses = Loss(0.2, out _, out _).Losses.data<float>().ToArray();
        // 0.8 * 0.598138869 + 0.2 * 0.798138869 and 0.8 * 0.798138869 + 0.2 * 0.598138869.
        Assert.Equal(0.638138869, losses[0], 6);
        Assert.Equal(0.758138869, losses[1], 6);
    }

    [Fact]
    public void Rpo_adds_alpha_times_the_chosen_nll_per_token_to_every_pair_and_pulls_chosen_up()
    {
        using var scope = NewDisposeScope();
        var pc = torch.tensor(PolicyChosen).requires_grad_();
        var pr = torch.tensor(PolicyRejected).requires_grad_();
        // The chosen completions hold 5 tokens in all: nll = -(-5 + -8) / 5 = 2.6, times alpha 0.5 = 1.3 on each pair.
        var result = DpoLoss.Sigmoid(pc, pr, torch.tensor(RefChosen), torch.tensor(RefRejected), 0.1, rpoAlpha: 0.5, chosenTokens: 5);
        var losses = result.Losses.data<float>().ToArray();
        Assert.Equal(0.598138869 + 1.3, losses[0], 5);
        Assert.Equal(0.798138869 + 1.3, losses[1], 5);
        Assert.Equal(2 * 2.6, DpoLoss.MetricSums(result, pc, pr)[DpoLoss.NllMetric], 5);   // summed over the pairs, as the other metrics
        result.Losses.sum().backward();
        // Each pair's term holds 0.5 * -(pc0 + pc1) / 5: two pairs give d/dpc = -0.2 on top of the DPO gradient.
        Assert.Equal(-0.1 / (1 + Math.Exp(0.2)) - 0.2, pc.grad!.data<float>()[0], 5);
        Assert.Equal(0.1 / (1 + Math.Exp(0.2)), pr.grad!.data<float>()[0], 5);
        Assert.Throws<ArgumentOutOfRangeException>(() => DpoLoss.Sigmoid(pc, pr, torch.tensor(RefChosen), torch.tensor(RefRejected), 0.1, rpoAlpha: 1));
    }

    [Fact]
    public void The_gradient_pushes_chosen_up_and_rejected_down_scaled_by_beta_times_sigmoid()
    {
        using var scope = NewDisposeScope();
        var pc = torch.tensor(PolicyChosen).requires_grad_();
        var pr = torch.tensor(PolicyRejected).requires_grad_();
        DpoLoss.Sigmoid(pc, pr, torch.tensor(RefChosen), torch.tensor(RefRejected), 0.1).Losses.sum().backward();
        // d/dpi_c of -logsigmoid(beta h) = -beta * sigmoid(-beta h).
        Assert.Equal(-0.1 / (1 + Math.Exp(0.2)), pc.grad!.data<float>()[0], 6);
        Assert.Equal(0.1 / (1 + Math.Exp(0.2)), pr.grad!.data<float>()[0], 6);
        Assert.Equal(-0.1 / (1 + Math.Exp(-0.2)), pc.grad!.data<float>()[1], 6);
    }
}

public class DpoDataTests
{
    [Fact]
    public void A_long_prompt_loses_its_beginning_and_a_long_side_loses_the_end_of_its_completion()
    {
        var tokens = new TokenizedExample([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [false, false, false, false, false, false, true, true, true, true]);
        var side = DpoData.Side(tokens, maxPromptLength: 3, maxLength: 6, out bool promptCut, out bool completionCut);
        Assert.Equal([4, 5, 6, 7, 8, 9], side.Ids);
        Assert.Equal([false, false, false, true, true, true], side.Completion);
        Assert.True(promptCut);
        Assert.True(completionCut);

        var untouched = DpoData.Side(tokens, maxPromptLength: 6, maxLength: 10, out promptCut, out completionCut);
        Assert.Equal(tokens.InputIds.ToArray(), untouched.Ids);
        Assert.False(promptCut || completionCut);
    }

    [Fact]
    public void Each_side_ends_with_an_eos_that_is_part_of_the_completion_and_identical_pairs_are_dropped()
    {
        var tokenizer = TextTokenizer.BuiltIn();
        var examples = new Example[]
        {
            PreferenceExample.Of("What is 2 + 3?", "5", "I do not know."),
            PreferenceExample.Of("What is 2 + 2?", "4", "4"),
        };
        var (pairs, stats) = DpoData.TokenizeAll(examples, tokenizer, PromptTemplates.StackLlama, maxPromptLength: 64, maxLength: 128);
        var (example, pair) = Assert.Single(pairs);
        Assert.Equal("5", example.Chosen.ToString());
        Assert.Equal(1, stats.DroppedIdentical);
        foreach (var side in new[] { pair.Chosen, pair.Rejected })
        {
            Assert.Equal(tokenizer.EosId, side.Ids[^1]);
            Assert.True(side.Completion[^1]);
            Assert.False(side.Completion[0]);
        }
        Assert.Equal("5", tokenizer.Decode(pair.Chosen.Ids.Where((_, i) => pair.Chosen.Completion[i]).SkipLast(1).ToList()).Trim());
    }

    [Fact]
    public void Collation_stacks_chosen_then_rejected_and_targets_only_completion_tokens()
    {
        using var scope = NewDisposeScope();
        var a = new DpoPair(new DpoSequence([1, 2, 3, 4], [false, false, true, true]), new DpoSequence([1, 2, 5], [false, false, true]));
        var b = new DpoPair(new DpoSequence([7, 8, 9], [false, true, true]), new DpoSequence([7, 6, 6, 6, 6], [false, true, true, true, true]));
        var batch = DpoBatch.Collate([a, b], padId: 0, CPU);
        Assert.Equal([4L, 5L], batch.InputIds.shape);
        Assert.Equal([1L, 2, 3, 4, 0, 7, 8, 9, 0, 0, 1, 2, 5, 0, 0, 7, 6, 6, 6, 6], batch.InputIds.data<long>().ToArray());
        const long I = DpoBatch.IgnoreIndex;
        Assert.Equal([I, 3, 4, I, 8, 9, I, I, I, 5, I, I, 6, 6, 6, 6], batch.Targets.data<long>().ToArray());
        Assert.Equal(2, batch.Pairs);
        Assert.Equal(15, batch.Tokens);
        Assert.Equal(4, batch.ChosenTargets);                            // 3, 4 of pair a and 8, 9 of pair b
    }
}
