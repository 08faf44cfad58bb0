using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

/// <summary>Preallocated keys and values for incremental decoding: per layer [B, kvHeads, maxLength, headDim],
/// written in place (no concatenation). Use under <c>torch.no_grad()</c>: it is an inference structure.
/// The attention mask passed with each step covers cached + new positions, as in transformers.</summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _keys;
    private readonly Tensor[] _values;

    public long Batch { get; }
    public long MaxLength { get; }
    /// <summary>Positions filled so far.</summary>
    public long Length { get; private set; }
    public int Layers => _keys.Length;
    /// <summary>dtype of the cached keys and values (the dtype a one-token decode step attends in).</summary>
    public ScalarType Dtype => _keys[0].dtype;

    public KvCache(int layers, long batch, int kvHeads, long maxLength, int headDim, ScalarType dtype, Device? device = null)
    {
        if (layers <= 0 || batch <= 0 || kvHeads <= 0 || maxLength <= 0 || headDim <= 0)
            throw new ArgumentOutOfRangeException(nameof(maxLength), "cache dimensions must be positive");
        Batch = batch;
        MaxLength = maxLength;
        _keys = new Tensor[layers];
        _values = new Tensor[layers];
        for (int i = 0; i < layers; i++)
        {
            // Zeros, not empty: unused slots are never attended, but garbage NaNs would still poison a masked matmul.
            _keys[i] = torch.zeros([batch, kvHeads, maxLength, headDim], dtype: dtype, device: device).DetachFromDisposeScope();
            _values[i] = torch.zeros([batch, kvHeads, maxLength, headDim], dtype: dtype, device: device).DetachFromDisposeScope();
        }
    }

    /// <summary>Writes k, v (B, kvH, T, hs) at the current length of <paramref name="layer"/> and returns views of
    /// everything cached so far including them: (B, kvH, Length + T, hs).</summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        using (var kSlot = _keys[layer].narrow(2, Length, t)) kSlot.copy_(k);
        using (var vSlot = _values[layer].narrow(2, Length, t)) vSlot.copy_(v);
        return (_keys[layer].narrow(2, 0, Length + t), _values[layer].narrow(2, 0, Length + t));
    }

    /// <summary>The whole key and value tensors [B, kvH, MaxLength, hs] of <paramref name="layer"/>.</summary>
    internal (Tensor Keys, Tensor Values) Layer(int layer) => (_keys[layer], _values[layer]);

    /// <summary>Called once per forward, after all layers wrote their <paramref name="count"/> new positions.</summary>
    internal void Advance(long count) => Length += count;

    /// <summary>Checks a forward of <paramref name="newTokens"/> fits.</summary>
    internal void CheckRoom(long batch, long newTokens)
    {
        if (batch != Batch) throw new ArgumentException($"cache was made for batch {Batch}, input has batch {batch}");
        if (Length + newTokens > MaxLength)
            throw new ArgumentException($"cache holds {MaxLength} positions; {Length} used, {newTokens} more do not fit");
    }

    /// <summary>Forgets all positions (keeps the memory) so the cache can serve a new batch of the same size.</summary>
    public void Reset() => Length = 0;

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }
}

/// <summary>Positions and the attention mask for one forward, shared by the architectures.</summary>
internal static class AttentionInputs
{
    /// <summary>Default position ids (B, T): with a mask, cumsum(mask) - 1 clamped at 0 (as transformers' generation
    /// does, so left padding does not shift positions); without one, past .. past+T-1.</summary>
    public static Tensor PositionIds(Tensor? attentionMask, long batch, long past, long length, Device device)
    {
        using var scope = NewDisposeScope();
        Tensor positions;
        if (attentionMask is null)
            positions = torch.arange(past, past + length, dtype: ScalarType.Int64, device: device).unsqueeze(0).expand(batch, length);
        else
            positions = (attentionMask.to(ScalarType.Int64).cumsum(-1) - 1).clamp_min(0).narrow(1, past, length);
        return positions.MoveToOuterDisposeScope();
    }

    /// <summary>The mask for scaled_dot_product_attention: null with <c>isCausal</c> when plain causal attention is right,
    /// else bool (B or 1, 1, T, past+T), true = attend. Query rows with nothing to attend to (pad queries under left
    /// padding) are opened to their own key only: their outputs are ignored, softmax stays free of NaN, and every row
    /// stays within the causal pattern (the CPU attention kernels then skip the upper triangle, as for causal attention).</summary>
    public static (Tensor? Mask, bool IsCausal) Build(Tensor? attentionMask, long past, long length, Device device)
    {
        if (attentionMask is null && past == 0) return (null, length > 1);
        if (attentionMask is null && length == 1) return (null, false);   // one new token sees the whole cache
        // A mask of ones over whole sequences is plain causal attention (transformers drops it for SDPA too): no
        // (B, 1, T, T) mask to build, and the kernels skip their per-layer check of it.
        if (attentionMask is not null && past == 0 && AllOnes(attentionMask)) return (null, length > 1);
        using var scope = NewDisposeScope();
        long total = past + length;
        var keyPos = torch.arange(total, dtype: ScalarType.Int64, device: device).unsqueeze(0);            // (1, S)
        var queryPos = torch.arange(past, total, dtype: ScalarType.Int64, device: device).unsqueeze(1);   // (T, 1)
        var mask = keyPos.le(queryPos).unsqueeze(0).unsqueeze(0);                                           // (1, 1, T, S)
        if (attentionMask is not null)
        {
            var keep = attentionMask.to(ScalarType.Bool).unsqueeze(1).unsqueeze(1);                        // (B, 1, 1, S)
            mask = mask.logical_and(keep);                                                                  // (B, 1, T, S)
            var empty = mask.any(-1, keepdim: true).logical_not();                                          // (B, 1, T, 1)
            mask = mask.logical_or(empty.logical_and(keyPos.eq(queryPos).unsqueeze(0).unsqueeze(0)));
        }
        return (mask.MoveToOuterDisposeScope(), false);
    }

    private static bool AllOnes(Tensor attentionMask)
    {
        using var scope = NewDisposeScope();
        return attentionMask.to(ScalarType.Bool).all().item<bool>();
    }
}
