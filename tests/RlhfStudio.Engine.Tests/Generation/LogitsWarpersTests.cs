using RlhfStudio.Engine.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Generation;

public class LogitsWarpersTests
{
    // Probabilities 0.5, 0.3, 0.15, 0.05 in shuffled vocabulary order.
    private static Tensor Scores() => torch.tensor(new[] { 0.15f, 0.5f, 0.05f, 0.3f }).log().unsqueeze(0);

    private static bool[] Kept(Tensor warped) => warped.isfinite().squeeze(0).data<bool>().ToArray();

    [Theory]
    [InlineData(0.75, new[] { false, true, false, true })]   // cumulative ascending 0.05, 0.2 <= 0.25 removed; 0.5 > 0.25 kept
    [InlineData(0.4, new[] { false, true, false, false })]   // only the top token
    [InlineData(0.9, new[] { true, true, false, true })]     // 0.05 <= 0.1 removed
    [InlineData(1e-9, new[] { false, true, false, false })]  // at least one token always survives
    public void Top_p_keeps_the_smallest_nucleus_as_transformers(double p, bool[] kept)
    {
        using var scores = Scores();
        using var warped = LogitsWarpers.TopP(scores, p);
        Assert.Equal(kept, Kept(warped));
    }

    [Fact]
    public void Top_k_keeps_the_k_best_and_ties_with_the_kth()
    {
        using var scores = torch.tensor(new[] { 1f, 3f, 2f, 2f, 0f }).unsqueeze(0);
        using var top2 = LogitsWarpers.TopK(scores, 2);
        Assert.Equal(new[] { false, true, true, true, false }, Kept(top2));
        using var top9 = LogitsWarpers.TopK(scores, 9);
        Assert.Equal(new[] { true, true, true, true, true }, Kept(top9));
    }

    [Fact]
    public void Temperature_divides_and_suppress_sets_minus_infinity()
    {
        using var scores = torch.tensor(new[] { 1f, -2f, 4f }).unsqueeze(0);
        using var hot = LogitsWarpers.Temperature(scores, 2.0);
        Assert.Equal(new[] { 0.5f, -1f, 2f }, hot.data<float>().ToArray());
        using var ids = torch.tensor(new long[] { 2 });
        using var suppressed = LogitsWarpers.Suppress(scores, ids);
        Assert.Equal(new[] { 1f, -2f, float.NegativeInfinity }, suppressed.data<float>().ToArray());
        Assert.Equal(new[] { 1f, -2f, 4f }, scores.data<float>().ToArray());
    }
}
