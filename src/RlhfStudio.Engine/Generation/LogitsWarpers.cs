// The logits processors and warpers of transformers' generation, as pure functions of fp32 scores (B, V).
// Each returns a new tensor and leaves its input untouched.
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Generation;

public static class LogitsWarpers
{
    /// <summary>HF TemperatureLogitsWarper: scores / temperature.</summary>
    public static Tensor Temperature(Tensor scores, double temperature)
    {
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), "must be positive");
        using var t = temperature.ToScalar();
        return scores.div(t);
    }

    /// <summary>HF TopKLogitsWarper (min_tokens_to_keep = 1): tokens scoring below the k-th best become -inf
    /// (ties with the k-th best are kept).</summary>
    public static Tensor TopK(Tensor scores, int k)
    {
        if (k <= 0) throw new ArgumentOutOfRangeException(nameof(k), "must be positive");
        k = (int)Math.Min(k, scores.shape[^1]);
        using var scope = NewDisposeScope();
        var (values, _) = scores.topk(k, dim: -1);
        var remove = scores.lt(values.narrow(-1, k - 1, 1));
        using var negInf = float.NegativeInfinity.ToScalar();
        return scores.masked_fill(remove, negInf).MoveToOuterDisposeScope();
    }

    /// <summary>HF TopPLogitsWarper (min_tokens_to_keep = 1): sort ascending, remove the tokens whose cumulative
    /// probability is at most 1 - p, always keep the most likely token.</summary>
    public static Tensor TopP(Tensor scores, double p)
    {
        if (!(p > 0 && p <= 1)) throw new ArgumentOutOfRangeException(nameof(p), "must be in (0, 1]");
        using var scope = NewDisposeScope();
        long vocab = scores.shape[^1];
        var (sorted, indices) = scores.sort(-1, descending: false);
        var cumulative = sorted.softmax(-1).cumsum(-1);
        using var threshold = (1 - p).ToScalar();
        var sortedRemove = cumulative.le(threshold);
        using var keep = false.ToScalar();
        sortedRemove.narrow(-1, vocab - 1, 1).fill_(keep);
        var remove = sortedRemove.scatter(-1, indices, sortedRemove);
        using var negInf = float.NegativeInfinity.ToScalar();
        return scores.masked_fill(remove, negInf).MoveToOuterDisposeScope();
    }

    /// <summary>HF MinNewTokensLengthLogitsProcessor's effect: the given ids (I) can not be chosen.</summary>
    public static Tensor Suppress(Tensor scores, Tensor ids)
    {
        using var negInf = float.NegativeInfinity.ToScalar();
        return scores.index_fill(-1, ids, negInf);
    }

    /// <summary>Temperature, top-k and top-p in HF's order; null/off values skip a step. Returns a new tensor.</summary>
    public static Tensor Warp(Tensor scores, double temperature, int topK, double topP)
    {
        using var scope = NewDisposeScope();
        var x = temperature > 0 && temperature != 1.0 ? Temperature(scores, temperature) : scores.alias();
        if (topK > 0) x = TopK(x, topK);
        if (topP < 1.0) x = TopP(x, topP);
        return x.MoveToOuterDisposeScope();
    }
}
