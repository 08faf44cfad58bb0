using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Models;

// Registration: TorchSharp's RegisterComponents() registers every Module/Parameter/Tensor *field* under the
// field's name, and runs lazily on first use if a module never called it. Our children are properties (their
// backing fields are named "<x>k__BackingField") and the trunk's name depends on the family, so every module
// calls RegisterComponents() first thing in its constructor, while no field is assigned: that registers nothing
// and turns the lazy pass off. Children are then registered explicitly with register_module/register_parameter
// under the Hugging Face names.

/// <summary>The transformer body shared by every head: token ids in, final hidden states out.
/// Parameter names below the trunk equal Hugging Face's (under <see cref="Prefix"/>).</summary>
public abstract class Trunk : nn.Module
{
    protected Trunk(string name, ModelConfig config) : base(name) => Config = config;

    public ModelConfig Config { get; }

    /// <summary>Name of the trunk inside the full model, as in HF: "model" (Llama family) or "transformer" (GPT-2).</summary>
    public abstract string Prefix { get; }

    /// <summary>The token embedding matrix [vocab, hidden] (a tied LM head reuses it). Cached: TorchSharp's
    /// Embedding.weight getter makes a new native handle on every call, which a per-forward tied LM head
    /// and every DType/Device query would otherwise leak until finalisation.</summary>
    public Parameter TokenEmbedding
    {
        get
        {
            if (_tokenEmbedding is null)
            {
                var weight = ReadTokenEmbedding();
                weight.DetachFromDisposeScope(); // the first read may happen inside a step's dispose scope
                _tokenEmbedding = weight;
            }
            return _tokenEmbedding;
        }
    }

    private Parameter? _tokenEmbedding;

    /// <summary>Reads the embedding parameter from the module (called once).</summary>
    protected abstract Parameter ReadTokenEmbedding();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _tokenEmbedding?.Dispose(); // only our extra handle; the module disposes its own
            _tokenEmbedding = null;
        }
        base.Dispose(disposing);
    }

    /// <param name="inputIds">(B, T) int64.</param>
    /// <param name="attentionMask">(B, past+T), 1 = real token, 0 = padding (left or right); null = all real.</param>
    /// <param name="positionIds">(B, T); null = cumsum(mask) - 1 clamped at 0, or past..past+T-1 without a mask.</param>
    /// <param name="cache">Keys/values of earlier positions; the new ones are appended.</param>
    /// <returns>Final hidden states (B, T, hidden) after the last norm.</returns>
    public abstract Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null);

    /// <summary>dtype of the activations (residual stream, attention); null = the weights' dtype. Set through
    /// <see cref="TransformerModel.ComputeDType"/>, which also sets every projection.</summary>
    public ScalarType? ComputeDType { get; internal set; }

    /// <summary>The dtype attention runs in, and so the dtype of cached keys and values.</summary>
    public ScalarType ActivationDType => ComputeDType ?? TokenEmbedding.dtype;

    /// <summary>A cache sized for this model, in the dtype attention runs in; fp32 under a 16-bit compute dtype (it
    /// holds the same, exactly representable values): one-token decode attention then runs in fp32, several times
    /// faster on CPU than bf16 attention for a single query, at twice the cache memory.</summary>
    /// <param name="dtype">Overrides that choice (the fused CPU decoder reads a bf16 cache: half the bytes).</param>
    public KvCache NewCache(long batch, long maxLength, Device? device = null, ScalarType? dtype = null) =>
        new(Config.NumHiddenLayers, batch, Config.NumKeyValueHeads, maxLength, Config.HeadDim,
            dtype ?? (ActivationDType is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : ActivationDType), device ?? TokenEmbedding.device);

    /// <summary>Embedding output cast to the compute dtype (embeddings stay in the weights' dtype, as under autocast).</summary>
    protected Tensor ToComputeDType(Tensor embedded) =>
        ComputeDType is ScalarType dtype && embedded.dtype != dtype ? embedded.to(dtype) : embedded;

    /// <summary>Checkpoint keys (relative to the trunk) that are buffers, not weights, in some HF files.</summary>
    internal virtual bool IsIgnoredCheckpointKey(string key) => false;

    /// <summary>Validates inputs and works out positions and the attention mask (shared by all architectures).</summary>
    protected (long Batch, long Length, long Past, Tensor Positions, Tensor? Mask, bool IsCausal) Prepare(
        Tensor inputIds, Tensor? attentionMask, Tensor? positionIds, KvCache? cache)
    {
        if (inputIds.ndim != 2 || inputIds.dtype != ScalarType.Int64)
            throw new ArgumentException($"inputIds must be (B, T) int64, got [{string.Join(", ", inputIds.shape)}] {inputIds.dtype}");
        long b = inputIds.shape[0], t = inputIds.shape[1];
        if (t == 0) throw new ArgumentException("inputIds has no tokens");
        long past = cache?.Length ?? 0;
        cache?.CheckRoom(b, t);
        if (attentionMask is not null && (attentionMask.ndim != 2 || attentionMask.shape[0] != b || attentionMask.shape[1] != past + t))
            throw new ArgumentException($"attentionMask must be (B, past+T) = ({b}, {past + t}), got [{string.Join(", ", attentionMask.shape)}]");
        if (positionIds is not null && (positionIds.ndim != 2 || positionIds.shape[0] != b || positionIds.shape[1] != t))
            throw new ArgumentException($"positionIds must be (B, T) = ({b}, {t}), got [{string.Join(", ", positionIds.shape)}]");
        if (Config.SlidingWindow is int window && past + t > window)
            throw new NotSupportedException($"sequence of {past + t} tokens exceeds the model's sliding window ({window}); sliding-window attention is not implemented");
        var positions = positionIds ?? AttentionInputs.PositionIds(attentionMask, b, past, t, inputIds.device);
        var (mask, causal) = AttentionInputs.Build(attentionMask, past, t, inputIds.device);
        return (b, t, past, positions, mask, causal);
    }

    /// <summary>scaled_dot_product_attention of q (B, nh, T, hs) over k, v (B, kvh, T, hs) and, with a cache, everything
    /// cached before them (the new keys and values are appended). A cache wider than the compute dtype (see
    /// <see cref="NewCache"/>) gives exactly the compute-dtype keys back for prompts; a one-token decode step attends in
    /// the cache's dtype instead and rounds the result once. Returns (B, nh, T, hs) in q's dtype.</summary>
    internal static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        long groups = q.shape[1] / k.shape[1];
        if (cache is not null)
        {
            (k, v) = cache.Append(layer, k, v);                                          // (B, kvh, past+T, hs)
            if (k.dtype != q.dtype)
            {
                if (q.shape[2] == 1)
                    return F.scaled_dot_product_attention(q.to(k.dtype), RepeatKv(k, groups), RepeatKv(v, groups), attn_mask: mask, is_casual: isCausal).to(q.dtype);
                k = k.to(q.dtype);
                v = v.to(q.dtype);
            }
        }
        // Whole sequences on a CPU (training, scoring, a prompt without a cache): the attention kernels, kv heads read in place.
        if (cache is null && AttentionFunction.Covers(q, k, v, mask))
            return AttentionFunction.Apply(q, k, v, mask, isCausal).transpose(1, 2);
        if (q.dtype == ScalarType.BFloat16 && q.shape[2] > 1 && k.shape[2] <= EagerAttentionMaxKeys)
            return EagerAttention(q, RepeatKv(k, groups), RepeatKv(v, groups), mask, isCausal);
        // SDPA here has no GQA: give every query head its own copy of its kv head.
        return F.scaled_dot_product_attention(q, RepeatKv(k, groups), RepeatKv(v, groups), attn_mask: mask, is_casual: isCausal);   // scale 1/sqrt(hs)
    }

    /// <summary>Up to this many keys, bf16 attention over several queries runs as <see cref="EagerAttention"/> (its
    /// (B, nh, T, S) fp32 scores are kept for backward: 8 MB a layer at 8 x 4 heads x 256^2).</summary>
    internal const long EagerAttentionMaxKeys = 1024;

    /// <summary>transformers' eager attention under autocast: scores q k^T as a bf16 batched matmul, scaled, masked and
    /// softmaxed in fp32, cast back, times v. libtorch's CPU flash kernel is slow in bf16 at these sizes: measured
    /// single-threaded at (8, 4, 186, 64) 5.9 ms vs 4.3 ms forward, and at (8, 4, 256, 64) 27.7 vs 22.8 ms forward and
    /// backward. <paramref name="isCausal"/> aligns top-left, as SDPA's; <paramref name="mask"/> is bool, true = attend.</summary>
    internal static Tensor EagerAttention(Tensor q, Tensor k, Tensor v, Tensor? mask, bool isCausal)
    {
        using var scope = NewDisposeScope();
        long b = q.shape[0], h = q.shape[1], t = q.shape[2], s = k.shape[2], hs = q.shape[3];
        var scores = torch.bmm(q.reshape(b * h, t, hs), k.reshape(b * h, s, hs).transpose(1, 2)).view(b, h, t, s).to(ScalarType.Float32);
        // In place on the fp32 copy: neither op's backward needs its input or output.
        using (var scale = (1.0 / Math.Sqrt(hs)).ToScalar()) scores.mul_(scale);
        var exclude = isCausal ? torch.ones([t, s], dtype: ScalarType.Bool, device: q.device).triu(1) : mask?.logical_not();
        if (exclude is not null)
            using (var negInf = float.NegativeInfinity.ToScalar()) scores.masked_fill_(exclude, negInf);
        var probs = scores.softmax(-1).to(q.dtype);
        return torch.bmm(probs.view(b * h, t, s), v.reshape(b * h, s, hs)).view(b, h, t, hs).MoveToOuterDisposeScope();
    }

    /// <summary>Repeats each kv head n times: (B, kvH, S, hs) -> (B, kvH*n, S, hs), as transformers' repeat_kv.</summary>
    internal static Tensor RepeatKv(Tensor x, long n)
    {
        if (n == 1) return x.alias();
        long b = x.shape[0], kvh = x.shape[1], s = x.shape[2], hs = x.shape[3];
        using var expanded = x.unsqueeze(2).expand(b, kvh, n, s, hs);
        return expanded.reshape(b, kvh * n, s, hs);
    }
}
