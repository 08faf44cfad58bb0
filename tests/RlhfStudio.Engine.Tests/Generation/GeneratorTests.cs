using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Generation.GenerationReference;

namespace RlhfStudio.Engine.Tests.Generation;

public class GeneratorTests
{
    private const long Pad = 0;
    // No EOS: every row runs to max_new_tokens, so outputs compare position by position.
    private static readonly GenerationSettings Greedy = new() { Temperature = 0, MaxNewTokens = 8, EosTokenIds = [], PadTokenId = Pad };

    [Theory]
    [InlineData(2)]   // grouped-query attention
    [InlineData(4)]   // multi-head
    public void Cached_greedy_generation_equals_recomputing_every_step_without_cache(int kvHeads)
    {
        using var model = Model(kvHeads: kvHeads);
        var prompts = Prompts();
        using var result = Run(model, prompts, Greedy with { ReturnLogProbs = true });
        var expected = GreedyWithoutCache(model, prompts, 8, Pad);
        Assert.Equal(expected, Rows(result.ResponseIds));

        var (_, promptMask) = LeftPad(prompts, 7, Pad);
        using var reference = LogProbsOf(model, result.Sequences, promptMask, result.PromptLength, temperature: 1.0);
        Assert.True(TestModels.MaxDiff(reference, result.LogProbs!) < 1e-4, $"max diff {TestModels.MaxDiff(reference, result.LogProbs!)}");
    }

    [Fact]
    public void A_left_padded_batch_gives_each_prompt_the_greedy_output_it_gets_alone()
    {
        using var model = Model();
        var prompts = Prompts();
        using var batch = Run(model, prompts, Greedy);
        var batched = Rows(batch.ResponseIds);
        for (int i = 0; i < prompts.Length; i++)
        {
            using var alone = Run(model, [prompts[i]], Greedy);
            Assert.Equal(Rows(alone.ResponseIds)[0], batched[i]);
        }
    }

    [Fact]
    public void Sampling_is_reproducible_for_a_seed_and_differs_between_seeds()
    {
        using var model = Model();
        var sample = Greedy with { Temperature = 1.5, MaxNewTokens = 12, Seed = 42 };
        using var a = Run(model, Prompts(), sample);
        using var b = Run(model, Prompts(), sample);
        using var c = Run(model, Prompts(), sample with { Seed = 43 });
        Assert.Equal(Rows(a.ResponseIds), Rows(b.ResponseIds));
        Assert.NotEqual(Rows(a.ResponseIds), Rows(c.ResponseIds));
        // Sampling at a high temperature must actually leave the greedy path somewhere.
        using var greedy = Run(model, Prompts(), Greedy with { MaxNewTokens = 12 });
        Assert.NotEqual(Rows(greedy.ResponseIds), Rows(a.ResponseIds));
    }

    [Fact]
    public void Top_k_of_one_and_a_tiny_top_p_both_sample_the_greedy_tokens()
    {
        using var model = Model();
        using var greedy = Run(model, Prompts(), Greedy);
        using var topK = Run(model, Prompts(), Greedy with { Temperature = 2.0, TopK = 1, Seed = 5 });
        using var topP = Run(model, Prompts(), Greedy with { Temperature = 2.0, TopP = 1e-6, Seed = 5 });
        Assert.Equal(Rows(greedy.ResponseIds), Rows(topK.ResponseIds));
        Assert.Equal(Rows(greedy.ResponseIds), Rows(topP.ResponseIds));
    }

    [Fact]
    public void Each_row_stops_at_its_eos_and_then_only_pads()
    {
        using var model = Model();
        var prompts = Prompts();
        using var free = Run(model, prompts, Greedy);
        var tokens = Rows(free.ResponseIds);
        // Row 0's third greedy token becomes EOS (and is not the pad id, so the test can tell them apart).
        long eos = tokens[0][2];
        Assert.NotEqual(Pad, eos);
        int Expected(long[] row) => Array.IndexOf(row, eos) is var i && i >= 0 ? i + 1 : row.Length;

        using var stopped = Run(model, prompts, Greedy with { EosTokenIds = [eos] });
        var rows = Rows(stopped.ResponseIds);
        var lengths = stopped.ResponseLengths.data<long>().ToArray();
        using var maskSum = stopped.ResponseMask.sum(-1);
        Assert.Equal(lengths, maskSum.data<long>().ToArray());
        for (int r = 0; r < prompts.Length; r++)
        {
            int n = Expected(tokens[r]);
            Assert.Equal(n, lengths[r]);
            Assert.Equal(tokens[r].Take(n), rows[r].Take(n));
            Assert.All(rows[r].Skip(n), t => Assert.Equal(Pad, t));
            Assert.Equal(n < tokens[r].Length || tokens[r][^1] == eos ? FinishReason.Eos : FinishReason.Length, stopped.FinishReasons[r]);
            Assert.Equal(tokens[r].Take(n), stopped.Tokens[r]);
        }
        Assert.Equal(3, lengths[0]);
    }

    [Fact]
    public void Generation_ends_early_once_every_row_has_finished()
    {
        using var model = Model();
        var prompt = Prompts()[0];
        using var free = Run(model, [prompt], Greedy);
        long eos = Rows(free.ResponseIds)[0][1];
        using var stopped = Run(model, [prompt], Greedy with { EosTokenIds = [eos] });
        Assert.Equal(Array.IndexOf(Rows(free.ResponseIds)[0], eos) + 1, stopped.ResponseIds.shape[1]);
    }

    [Fact]
    public void Min_new_tokens_keeps_eos_out_until_then()
    {
        using var model = Model();
        var prompts = Prompts();
        using var free = Run(model, prompts, Greedy);
        long eos = Rows(free.ResponseIds)[0][0];   // row 0 would end at once
        using var early = Run(model, prompts, Greedy with { EosTokenIds = [eos] });
        Assert.Single(early.Tokens[0]);

        using var held = Run(model, prompts, Greedy with { EosTokenIds = [eos], MinNewTokens = 4 });
        for (int r = 0; r < prompts.Length; r++)
        {
            Assert.True(held.Tokens[r].Count >= 4);
            Assert.DoesNotContain(eos, held.Tokens[r].Take(4));
        }
    }

    [Fact]
    public void Sampled_logprobs_equal_log_softmax_of_temperature_scaled_logits_at_the_chosen_tokens()
    {
        using var model = Model();
        var prompts = Prompts();
        const double t = 0.7;
        using var result = Run(model, prompts, Greedy with { Temperature = t, TopK = 20, TopP = 0.9, Seed = 3, MaxNewTokens = 10, ReturnLogProbs = true });
        var (_, promptMask) = LeftPad(prompts, 7, Pad);
        using var reference = LogProbsOf(model, result.Sequences, promptMask, result.PromptLength, t);
        Assert.True(TestModels.MaxDiff(reference, result.LogProbs!) < 1e-4, $"max diff {TestModels.MaxDiff(reference, result.LogProbs!)}");
        using var max = result.LogProbs!.max();
        Assert.True(max.item<float>() <= 0);
    }

    [Fact]
    public void Logprobs_of_finished_rows_are_zero_where_the_mask_is_false()
    {
        using var model = Model();
        using var free = Run(model, Prompts(), Greedy);
        long eos = Rows(free.ResponseIds)[1][1];
        using var result = Run(model, Prompts(), Greedy with { EosTokenIds = [eos], ReturnLogProbs = true });
        using var outside = result.LogProbs!.masked_select(result.ResponseMask.logical_not());
        using var inside = result.LogProbs!.masked_select(result.ResponseMask);
        Assert.True(outside.numel() > 0);
        Assert.All(outside.data<float>().ToArray(), v => Assert.Equal(0f, v));
        Assert.All(inside.data<float>().ToArray(), v => Assert.True(v < 0));
    }

    [Fact]
    public void The_stream_reports_every_step_with_the_rows_still_running()
    {
        using var model = Model();
        using var free = Run(model, Prompts(), Greedy);
        long eos = Rows(free.ResponseIds)[1][2];
        var steps = new List<GenerationStep>();
        using var result = Run(model, Prompts(), Greedy with { EosTokenIds = [eos] }, steps.Add);
        Assert.Equal(result.ResponseIds.shape[1], steps.Count);
        var rows = Rows(result.ResponseIds);
        for (int s = 0; s < steps.Count; s++)
        {
            Assert.Equal(s, steps[s].Step);
            for (int r = 0; r < rows.Length; r++)
            {
                Assert.Equal(rows[r][s], steps[s].Tokens[r]);
                Assert.Equal(s < result.Tokens[r].Count, steps[s].Active[r]);
            }
        }
    }

    [Fact]
    public void Bf16_generation_runs_in_bf16_and_its_first_token_matches_the_uncached_forward()
    {
        using var model = Model(ScalarType.BFloat16);
        var prompts = Prompts();
        using var result = Run(model, prompts, Greedy with { ReturnLogProbs = true });
        var expected = GreedyWithoutCache(model, prompts, 1, Pad);
        Assert.Equal(expected.Select(e => e[0]), Rows(result.ResponseIds).Select(r => r[0]));
        var (_, promptMask) = LeftPad(prompts, 7, Pad);
        using var reference = LogProbsOf(model, result.Sequences, promptMask, result.PromptLength, 1.0);
        using var firstRef = reference.narrow(1, 0, 1);
        using var firstGot = result.LogProbs!.narrow(1, 0, 1);
        Assert.True(TestModels.MaxDiff(firstRef, firstGot) < 0.05);
    }

    [Fact]
    public void Generation_frees_every_tensor_it_made_once_the_result_is_disposed()
    {
        using var model = Model();
        var (ids, mask) = LeftPad(Prompts(), 7, Pad);
        using (ids)
        using (mask)
        {
            _ = model.Device; // the model's cached embedding handle is the model's, made on first use
            long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            var result = TextGenerator.Generate(model, ids, mask, Greedy with { Temperature = 1.0, TopK = 10, TopP = 0.9, ReturnLogProbs = true });
            result.Dispose();
            Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }
    }

    [Theory]
    [InlineData(0, 0, 1.0, 1.0, "max_new_tokens")]
    [InlineData(4, 5, 1.0, 1.0, "min_new_tokens")]
    [InlineData(4, 0, -1.0, 1.0, "temperature")]
    [InlineData(4, 0, 1.0, 0.0, "top_p")]
    public void Bad_settings_are_refused_by_name(int maxNew, int minNew, double temperature, double topP, string field)
    {
        using var model = Model();
        var (ids, mask) = LeftPad(Prompts(), 7, Pad);
        var e = Assert.Throws<ArgumentException>(() => TextGenerator.Generate(model, ids, mask,
            new GenerationSettings { MaxNewTokens = maxNew, MinNewTokens = minNew, Temperature = temperature, TopP = topP }));
        Assert.Contains(field, e.Message);
    }

    [Fact]
    public void Right_padded_prompts_are_refused()
    {
        using var model = Model();
        using var ids = TestModels.Ids([5, 6, 0], [7, 8, 9]);
        using var mask = TestModels.Ids([1, 1, 0], [1, 1, 1]);
        var e = Assert.Throws<ArgumentException>(() => TextGenerator.Generate(model, ids, mask, Greedy));
        Assert.Contains("left padded", e.Message);
    }
}
