using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Generation;

public static class Sampling
{
    /// <summary>One draw per row from probabilities (B, V) by inverting the cumulative distribution with a single
    /// uniform number per row: the index of the first cumulative probability reaching u, u in (0, total].
    /// Distributed exactly as torch.multinomial(probs, 1), but ~8x cheaper here (multinomial draws an exponential
    /// variate for every vocabulary entry: 1.7 ms vs 0.2 ms for 8 x 8192 on this CPU). Zero-probability entries
    /// (filtered by top-k / top-p) can never be chosen: their cumulative value equals the previous one.
    /// Scaling u by the row total makes rounding in the cumulative sum harmless.</summary>
    public static Tensor Draw(Tensor probs, torch.Generator generator)
    {
        using var scope = NewDisposeScope();
        long b = probs.shape[0], v = probs.shape[1];
        var cdf = probs.cumsum(-1);                                                          // (B, V)
        var u = torch.rand([b, 1], dtype: cdf.dtype, device: cdf.device, generator: generator);
        u = torch.ones_like(u).sub_(u).mul_(cdf.narrow(1, v - 1, 1));                        // (1 - U) * total, in (0, total]
        // u <= total = cdf[:, V-1], so at most V-1 entries lie below u: the index is always in range.
        return cdf.lt(u).sum(-1, type: ScalarType.Int64).MoveToOuterDisposeScope();   // (B)
    }
}
