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
}
