// Statistics over the real tokens of a padded batch (TRL trl/core.py: masked_mean, masked_var, masked_whiten).
// Masks are bool tensors of the values' shape, true = a real token that counts.
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

public static class MaskedStats
{
    /// <summary>sum(values * mask) / sum(mask) over every element (TRL masked_mean without axis).</summary>
    public static Tensor Mean(Tensor values, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var m = mask.to(values.dtype);
        return (values * m).sum().div(m.sum()).MoveToOuterDisposeScope();
    }

    /// <summary>Mean along <paramref name="dim"/> (TRL masked_mean with axis).</summary>
    public static Tensor Mean(Tensor values, Tensor mask, long dim)
    {
        using var scope = NewDisposeScope();
        var m = mask.to(values.dtype);
        return (values * m).sum(dim).div(m.sum(dim)).MoveToOuterDisposeScope();
    }

    /// <summary>Variance of the masked values; unbiased (Bessel's n / (n - 1)) by default as in TRL. Throws when the mask
    /// holds fewer than two values, which TRL reports as "increase the mini-batch size".</summary>
    public static Tensor Var(Tensor values, Tensor mask, bool unbiased = true)
    {
        using var scope = NewDisposeScope();
        var mean = Mean(values, mask);
        var centered = values - mean;
        var variance = Mean(centered * centered, mask);
        if (unbiased)
        {
            double n = mask.to(ScalarType.Float64).sum().item<double>();
            if (n < 2)
                throw new InvalidOperationException($"cannot whiten over {n} real token(s): the variance needs at least two (use a larger batch)");
            variance = variance * (n / (n - 1));
        }
        return variance.MoveToOuterDisposeScope();
    }

    /// <summary>(values - mean) / sqrt(var + 1e-8) over the masked values; with <paramref name="shiftMean"/> false the
    /// mean is added back (only the scale changes), as TRL's reward whitening does. Masked-out positions are transformed
    /// too: callers zero them afterwards.</summary>
    public static Tensor Whiten(Tensor values, Tensor mask, bool shiftMean = true)
    {
        using var scope = NewDisposeScope();
        var mean = Mean(values, mask);
        var variance = Var(values, mask);
        var whitened = (values - mean) * (variance + 1e-8).rsqrt();
        if (!shiftMean) whitened = whitened + mean;
        return whitened.MoveToOuterDisposeScope();
    }
}
