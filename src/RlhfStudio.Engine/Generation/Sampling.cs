using RlhfStudio.Engine.Runtime;
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
        var u = torch.rand([probs.shape[0], 1], dtype: ScalarType.Float32, device: probs.device, generator: generator);
        return Draw(probs, u).MoveToOuterDisposeScope();
    }

    /// <summary><see cref="Draw(Tensor, torch.Generator)"/> with the uniform numbers (B, 1) fp32 given.</summary>
    private static Tensor Draw(Tensor probs, Tensor uniform)
    {
        using var scope = NewDisposeScope();
        long v = probs.shape[1];
        var cdf = probs.cumsum(-1);                                                          // (B, V)
        var u = torch.ones_like(uniform).sub_(uniform).to(cdf.dtype).mul_(cdf.narrow(1, v - 1, 1));   // (1 - U) * total, in (0, total]
        // u <= total = cdf[:, V-1], so at most V-1 entries lie below u: the index is always in range.
        return cdf.lt(u).sum(-1, type: ScalarType.Int64).MoveToOuterDisposeScope();   // (B)
    }

    /// <summary>One draw per row from softmax(logits / <paramref name="temperature"/>) (B, V): the same uniform numbers
    /// from <paramref name="generator"/> and the same inversion as softmax then <see cref="Draw(Tensor, torch.Generator)"/>,
    /// in one kernel pass per row on a CPU with the kernels (fp32 logits), else those libtorch ops. The sampling loop's
    /// softmax, cumulative sum, comparison and count took ~125 us a step at 8 x 8192 (~16 ms of a 128-token generation).</summary>
    public static unsafe Tensor DrawFromLogits(Tensor logits, double temperature, torch.Generator generator)
    {
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), "must be positive");
        using var scope = NewDisposeScope();
        long b = logits.shape[0], v = logits.shape[1];
        var u = torch.rand([b, 1], dtype: ScalarType.Float32, device: logits.device, generator: generator);
        if (CpuKernels.IsSupported && logits.device_type == DeviceType.CPU && logits.dtype == ScalarType.Float32 && logits.ndim == 2 && v <= int.MaxValue)
        {
            var x = logits.contiguous();
            float* data = (float*)NativeTensors.Data(x, ScalarType.Float32), uniform = (float*)NativeTensors.Data(u, ScalarType.Float32);
            var chosen = new long[b];
            var scratch = System.Buffers.ArrayPool<float>.Shared.Rent((int)v);
            bool all = true;
            try
            {
                fixed (float* s = scratch)
                    for (long r = 0; r < b && all; r++)
                    {
                        chosen[r] = CpuKernels.SampleRow(data + r * v, (int)v, (float)temperature, uniform[r], s);
                        all = chosen[r] >= 0;
                    }
            }
            finally { System.Buffers.ArrayPool<float>.Shared.Return(scratch); }
            // A row without a finite maximum (NaN logits) takes the libtorch ops, as before, with the same numbers.
            if (all) return torch.tensor(chosen, dtype: ScalarType.Int64).MoveToOuterDisposeScope();
        }
        var warped = LogitsWarpers.Warp(logits, temperature, 0, 1.0);
        return Draw(warped.softmax(-1), u).MoveToOuterDisposeScope();
    }
}
