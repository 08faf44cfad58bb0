// Where responses end. TRL (trl/trainer/utils.py) finds ends by comparing ids with the pad id; here ends come from
// the stop tokens and are carried as explicit masks, because with pad == eos (the common set-up) a comparison with
// the pad id cannot tell the EOS that ended a response from the padding after it.
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

public static class ResponseMasks
{
    /// <summary>Index of the first true element along the last dimension, or its length when there is none
    /// (TRL first_true_indices).</summary>
    public static Tensor FirstTrueIndices(Tensor bools)
    {
        using var scope = NewDisposeScope();
        long length = bools.shape[^1];
        var notTrue = bools.logical_not().to(ScalarType.Int64) * length;
        var index = torch.arange(length, dtype: ScalarType.Int64, device: bools.device);
        return (notTrue + index).min(-1).values.MoveToOuterDisposeScope();
    }

    /// <summary>TRL truncate_response: every token after the first stop token becomes <paramref name="padId"/> (the stop
    /// token itself is kept). Returns the truncated responses (B, N) and the mask of real tokens (B, N): everything up to
    /// and including the first stop token, or the whole row when it has none (it ran out of tokens).</summary>
    public static (Tensor Responses, Tensor RealMask) TruncateAfterStop(Tensor responses, IReadOnlyList<long> stopIds, long padId)
    {
        using var scope = NewDisposeScope();
        var stops = torch.tensor(stopIds.ToArray(), dtype: ScalarType.Int64, device: responses.device);
        var isStop = responses.isin(stops);
        var end = FirstTrueIndices(isStop).unsqueeze(1);                                                    // (B, 1)
        var index = torch.arange(responses.shape[1], dtype: ScalarType.Int64, device: responses.device).unsqueeze(0);
        var real = index.le(end);
        var truncated = responses.masked_fill(real.logical_not(), padId);
        return (truncated.MoveToOuterDisposeScope(), real.MoveToOuterDisposeScope());
    }

    /// <summary>The mask (B, N) of the first <paramref name="lengths"/>[b] positions of each row.</summary>
    public static Tensor FromLengths(Tensor lengths, long width)
    {
        using var scope = NewDisposeScope();
        var index = torch.arange(width, dtype: ScalarType.Int64, device: lengths.device).unsqueeze(0);
        return index.lt(lengths.unsqueeze(1)).MoveToOuterDisposeScope();
    }

    /// <summary>Index of the last real token of each row (B); -1 for a row without one.</summary>
    public static Tensor LastRealIndex(Tensor realMask) => realMask.to(ScalarType.Int64).sum(-1).sub_(1L);
}
