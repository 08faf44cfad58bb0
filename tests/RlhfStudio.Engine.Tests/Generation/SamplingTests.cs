using RlhfStudio.Engine.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Generation;

public class SamplingTests
{
    [Fact]
    public void Draws_follow_the_probabilities_and_never_pick_a_zero_entry()
    {
        float[] p = [0.1f, 0f, 0.6f, 0.3f, 0f];
        const int n = 40000;
        using var probs = torch.tensor(p).unsqueeze(0).expand(n, p.Length).contiguous();
        using var draws = Sampling.Draw(probs, new torch.Generator(17));
        var counts = new int[p.Length];
        foreach (var d in draws.data<long>().ToArray()) counts[d]++;
        for (int i = 0; i < p.Length; i++)
            Assert.InRange(counts[i] / (double)n, p[i] - 0.01, p[i] + 0.01);
        Assert.Equal(0, counts[1]);
        Assert.Equal(0, counts[4]);
    }

    [Fact]
    public void Unnormalised_rows_and_a_single_possible_token_are_handled()
    {
        // A row summing to 0.9999 (rounding) and a one-hot row (top-p kept one token).
        using var probs = torch.tensor(new[] { 0.5f, 0.4999f, 0f, 0f, 0f, 1f }, [2, 3]);
        using var draws = Sampling.Draw(probs, new torch.Generator(1));
        var d = draws.data<long>().ToArray();
        Assert.InRange(d[0], 0, 1);
        Assert.Equal(2, d[1]);
    }

    [Fact]
    public void The_same_seed_gives_the_same_draws()
    {
        using var probs = torch.rand([64, 50], generator: new torch.Generator(3));
        using var a = Sampling.Draw(probs, new torch.Generator(9));
        using var b = Sampling.Draw(probs, new torch.Generator(9));
        using var c = Sampling.Draw(probs, new torch.Generator(10));
        Assert.Equal(a.data<long>().ToArray(), b.data<long>().ToArray());
        Assert.NotEqual(a.data<long>().ToArray(), c.data<long>().ToArray());
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(0.7)]
    public void The_kernel_draws_what_softmax_then_the_inverse_cdf_draws_from_the_same_numbers(double temperature)
    {
        // 257 ids: whole vectors and a scalar tail; some logits -inf (suppressed ids).
        using var logits = torch.randn([256, 257], generator: new torch.Generator(5)) * 3;
        logits[TensorIndex.Colon, TensorIndex.Slice(100, 110)] = torch.full([256, 10], float.NegativeInfinity);
        using var kernel = Sampling.DrawFromLogits(logits, temperature, new torch.Generator(11));
        using var warped = LogitsWarpers.Warp(logits, temperature, 0, 1.0);
        using var probs = warped.softmax(-1);
        using var ops = Sampling.Draw(probs, new torch.Generator(11));
        var a = kernel.data<long>().ToArray();
        var b = ops.data<long>().ToArray();
        // Equal but where the two sums' last-bit rounding straddles a boundary (expected ~never at this size).
        Assert.True(a.Zip(b).Count(x => x.First != x.Second) <= 1, $"{a.Zip(b).Count(x => x.First != x.Second)} of 256 draws differ");
        Assert.DoesNotContain(a, id => id is >= 100 and < 110);
    }

    [Fact]
    public void Kernel_draws_follow_the_softmax_and_never_pick_a_suppressed_token()
    {
        float[] x = [1f, float.NegativeInfinity, 2.5f, 0f, -1f];
        var p = x.Select(v => Math.Exp(v)).ToArray();
        double total = p.Sum();
        const int n = 40000;
        using var logits = torch.tensor(x).unsqueeze(0).expand(n, x.Length).contiguous();
        using var draws = Sampling.DrawFromLogits(logits, 1.0, new torch.Generator(23));
        var counts = new int[x.Length];
        foreach (var d in draws.data<long>().ToArray()) counts[d]++;
        for (int i = 0; i < x.Length; i++)
            Assert.InRange(counts[i] / (double)n, p[i] / total - 0.01, p[i] / total + 0.01);
        Assert.Equal(0, counts[1]);
    }

    [Fact]
    public void A_row_of_nan_logits_takes_the_libtorch_ops_and_the_others_are_unaffected_by_it()
    {
        using var logits = torch.randn([3, 40], generator: new torch.Generator(2));
        logits[1] = torch.full([40], float.NaN);
        using var draws = Sampling.DrawFromLogits(logits, 1.0, new torch.Generator(4));
        using var probs = logits.softmax(-1);
        using var ops = Sampling.Draw(probs, new torch.Generator(4));
        Assert.Equal(ops.data<long>().ToArray(), draws.data<long>().ToArray());
    }
}
