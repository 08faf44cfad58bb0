// The Llama family (Llama, Mistral, Qwen2): pre-norm decoder with RMSNorm, rotary embeddings, grouped-query
// attention and a SwiGLU MLP. Module and parameter names follow transformers' modeling_llama.py so that
// state_dict() keys equal the safetensors keys.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Models;

public sealed class LlamaAttention : nn.Module, IInferenceWeights
{
    private readonly int _heads, _kvHeads, _headDim;
    private Tensor? _inferenceQkv, _inferenceQkvBias;   // fused q/k/v copies inside an inference-weights scope
    public Projection q_proj { get; }
    public Projection k_proj { get; }
    public Projection v_proj { get; }
    public Projection o_proj { get; }

    public LlamaAttention(ModelConfig c, ScalarType dtype, Device? device) : base("LlamaAttention")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        _heads = c.NumAttentionHeads;
        _kvHeads = c.NumKeyValueHeads;
        _headDim = c.HeadDim;
        q_proj = new Projection(c.HiddenSize, _heads * _headDim, c.QkvBias, dtype, device);
        k_proj = new Projection(c.HiddenSize, _kvHeads * _headDim, c.QkvBias, dtype, device);
        v_proj = new Projection(c.HiddenSize, _kvHeads * _headDim, c.QkvBias, dtype, device);
        o_proj = new Projection(_heads * _headDim, c.HiddenSize, c.OutputBias, dtype, device);
        register_module("q_proj", q_proj);
        register_module("k_proj", k_proj);
        register_module("v_proj", v_proj);
        register_module("o_proj", o_proj);
    }

    /// <param name="cos">(B, T, hs), as <see cref="Rotary.CosSin"/>.</param>
    /// <param name="sin">(B, T, hs).</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        return Forward(x, RotaryTables.From(cos, sin), mask, isCausal, cache, layer).MoveToOuterDisposeScope();
    }

    internal Tensor Forward(Tensor x, RotaryTables rope, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        Tensor q, k, v;
        if (FusedWeights.Get(q_proj, k_proj, v_proj, _inferenceQkv, _inferenceQkvBias) is var (w, bias))
        {
            // One matmul for q, k and v (the weights concatenated row-wise), rotary on q and k heads together.
            var input = x.dtype == w.dtype ? x : x.to(w.dtype);
            var qkv = F.linear(input, w, bias).view(b, t, _heads + 2 * _kvHeads, _headDim);   // (B, T, nh + 2kvh, hs)
            if (cache is null && rope.Cos32 is { } cos32 && AttentionFunction.CoversPacked(qkv, _heads, _kvHeads, cos32, rope.SinSigned32!, mask))
            {
                // Whole sequences on a CPU: rotary and attention in the kernels, straight from the projection output.
                var attended = AttentionFunction.ApplyPacked(qkv, _heads, _kvHeads, cos32, rope.SinSigned32!, mask, isCausal);   // (B, T, nh, hs)
                return o_proj.forward(attended.view(b, t, _heads * _headDim)).MoveToOuterDisposeScope();
            }
            var qk = Rotary.Apply(qkv.narrow(2, 0, _heads + _kvHeads), rope);                // (B, T, nh + kvh, hs)
            q = qk.narrow(2, 0, _heads).transpose(1, 2);                                        // (B, nh, T, hs)
            k = qk.narrow(2, _heads, _kvHeads).transpose(1, 2);                                 // (B, kvh, T, hs)
            v = qkv.narrow(2, _heads + _kvHeads, _kvHeads).transpose(1, 2);                     // (B, kvh, T, hs)
        }
        else
        {
            // A LoRA adapter is active on one of them: each projection on its own.
            q = Rotary.Apply(q_proj.forward(x).view(b, t, _heads, _headDim), rope).transpose(1, 2);
            k = Rotary.Apply(k_proj.forward(x).view(b, t, _kvHeads, _headDim), rope).transpose(1, 2);
            v = v_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        }
        var y = Trunk.Attend(q, k, v, mask, isCausal, cache, layer);                    // (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(b, t, _heads * _headDim);
        return o_proj.forward(y).MoveToOuterDisposeScope();
    }

    /// <summary>The fused q/k/v weight [(nh + 2 kvh) hs, C] and bias of an open inference-weights scope, else null.</summary>
    internal (Tensor Weight, Tensor? Bias)? InferenceQkv => _inferenceQkv is { } w ? (w, _inferenceQkvBias) : null;

    void IInferenceWeights.CacheInferenceWeights() =>
        (_inferenceQkv, _inferenceQkvBias) = FusedWeights.Copy(q_proj, k_proj, v_proj);

    void IInferenceWeights.DropInferenceWeights()
    {
        _inferenceQkv?.Dispose();
        _inferenceQkvBias?.Dispose();
        _inferenceQkv = _inferenceQkvBias = null;
    }
}

/// <summary>Several projections of the same input as one matmul: their weights (and biases) concatenated row-wise, so
/// the parameters keep their Hugging Face names and shapes. Only for plain projections (no active LoRA adapter)
/// computing in the same dtype; the concatenation is part of the graph, so each weight gets its own gradient.</summary>
internal static class FusedWeights
{
    /// <summary>The fused weight and bias in the matmul dtype: the inference copy when one is given and no gradient is
    /// being recorded, else a concatenation made now; null when the projections cannot be fused.</summary>
    public static (Tensor Weight, Tensor? Bias)? Get(Projection a, Projection b, Projection c, Tensor? inferenceWeight, Tensor? inferenceBias)
    {
        if (inferenceWeight is not null && !torch.is_grad_enabled()) return (inferenceWeight, inferenceBias);
        if (!CanFuse(a, b, c)) return null;
        var dtype = a.MatmulDType;
        var w = torch.cat([a.weight, b.weight, c.weight], 0);
        if (w.dtype != dtype) w = w.to(dtype);
        Tensor? bias = null;
        if (a.bias is not null)
        {
            bias = torch.cat([a.bias, b.bias!, c.bias!], 0);
            if (bias.dtype != dtype) bias = bias.to(dtype);
        }
        return (w, bias);
    }

    /// <summary>Two projections (gate and up): as <see cref="Get(Projection, Projection, Projection, Tensor?, Tensor?)"/>.</summary>
    public static (Tensor Weight, Tensor? Bias)? Get(Projection a, Projection b, Tensor? inferenceWeight, Tensor? inferenceBias)
    {
        if (inferenceWeight is not null && !torch.is_grad_enabled()) return (inferenceWeight, inferenceBias);
        if (!CanFuse(a, b)) return null;
        var dtype = a.MatmulDType;
        var w = torch.cat([a.weight, b.weight], 0);
        if (w.dtype != dtype) w = w.to(dtype);
        Tensor? bias = null;
        if (a.bias is not null)
        {
            bias = torch.cat([a.bias, b.bias!], 0);
            if (bias.dtype != dtype) bias = bias.to(dtype);
        }
        return (w, bias);
    }

    /// <summary>Detached inference copies of the fused weight and bias, or (null, null) when they cannot be fused.</summary>
    public static (Tensor? Weight, Tensor? Bias) Copy(params Projection[] projections)
    {
        if (!CanFuse(projections)) return (null, null);
        var dtype = projections[0].MatmulDType;
        var w = InferenceCopies.Concat(projections.Select(p => (Tensor)p.weight).ToList(), dtype);
        var bias = projections[0].bias is null ? null : InferenceCopies.Concat(projections.Select(p => (Tensor)p.bias!).ToList(), dtype);
        return (w, bias);
    }

    private static bool CanFuse(params Projection[] projections)
    {
        var first = projections[0];
        foreach (var p in projections)
        {
            if (!p.IsPlain || p.FanInFanOut || p.MatmulDType != first.MatmulDType || (p.bias is null) != (first.bias is null)) return false;
            if (p.weight.dtype != first.weight.dtype || p.InFeatures != first.InFeatures) return false;
        }
        return true;
    }
}

public sealed class LlamaMlp : nn.Module<Tensor, Tensor>, IInferenceWeights
{
    private readonly Func<Tensor, Tensor> _act;
    private readonly bool _silu;
    private readonly long _intermediate;
    private Tensor? _inferenceGateUp, _inferenceGateUpBias;   // fused gate/up copies inside an inference-weights scope
    public Projection gate_proj { get; }
    public Projection up_proj { get; }
    public Projection down_proj { get; }

    public LlamaMlp(ModelConfig c, ScalarType dtype, Device? device) : base("LlamaMlp")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        _act = Activations.Get(c.HiddenAct);
        _silu = Activations.IsSilu(c.HiddenAct);
        _intermediate = c.IntermediateSize;
        gate_proj = new Projection(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype, device);
        up_proj = new Projection(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype, device);
        down_proj = new Projection(c.IntermediateSize, c.HiddenSize, c.MlpBias, dtype, device);
        register_module("gate_proj", gate_proj);
        register_module("up_proj", up_proj);
        register_module("down_proj", down_proj);
    }

    // down(act(gate(x)) * up(x)); gate and up as one matmul when neither has an active adapter.
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        Tensor gate, up;
        if (FusedWeights.Get(gate_proj, up_proj, _inferenceGateUp, _inferenceGateUpBias) is var (w, bias))
        {
            var input = x.dtype == w.dtype ? x : x.to(w.dtype);
            var gateUp = F.linear(input, w, bias);                         // (B, T, 2 * intermediate)
            if (_silu && SwiGluFunction.Covers(gateUp))
                return down_proj.forward(SwiGluFunction.Apply(gateUp)).MoveToOuterDisposeScope();   // one kernel pass each way
            gate = gateUp.narrow(-1, 0, _intermediate);
            up = gateUp.narrow(-1, _intermediate, _intermediate);
        }
        else
        {
            gate = gate_proj.forward(x);
            up = up_proj.forward(x);
        }
        return down_proj.forward(_act(gate) * up).MoveToOuterDisposeScope();
    }

    /// <summary>The fused gate/up weight [2 I, C] and bias of an open inference-weights scope, else null.</summary>
    internal (Tensor Weight, Tensor? Bias)? InferenceGateUp => _inferenceGateUp is { } w ? (w, _inferenceGateUpBias) : null;

    void IInferenceWeights.CacheInferenceWeights() =>
        (_inferenceGateUp, _inferenceGateUpBias) = FusedWeights.Copy(gate_proj, up_proj);

    void IInferenceWeights.DropInferenceWeights()
    {
        _inferenceGateUp?.Dispose();
        _inferenceGateUpBias?.Dispose();
        _inferenceGateUp = _inferenceGateUpBias = null;
    }
}

public sealed class LlamaDecoderLayer : nn.Module
{
    public LlamaAttention self_attn { get; }
    public LlamaMlp mlp { get; }
    public RmsNorm input_layernorm { get; }
    public RmsNorm post_attention_layernorm { get; }

    public LlamaDecoderLayer(ModelConfig c, ScalarType dtype, Device? device) : base("LlamaDecoderLayer")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        self_attn = new LlamaAttention(c, dtype, device);
        mlp = new LlamaMlp(c, dtype, device);
        input_layernorm = new RmsNorm(c.HiddenSize, c.NormEps, dtype, device);
        post_attention_layernorm = new RmsNorm(c.HiddenSize, c.NormEps, dtype, device);
        register_module("self_attn", self_attn);
        register_module("mlp", mlp);
        register_module("input_layernorm", input_layernorm);
        register_module("post_attention_layernorm", post_attention_layernorm);
    }

    /// <param name="cos">(B, T, hs), as <see cref="Rotary.CosSin"/>.</param>
    /// <param name="sin">(B, T, hs).</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        return Forward(x, RotaryTables.From(cos, sin), mask, isCausal, cache, layer).MoveToOuterDisposeScope();
    }

    internal Tensor Forward(Tensor x, RotaryTables rope, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        x = x.add(self_attn.Forward(input_layernorm.forward(x), rope, mask, isCausal, cache, layer), Scalars.One);
        x = x.add(mlp.forward(post_attention_layernorm.forward(x)), Scalars.One);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers' LlamaModel (also Mistral, Qwen2): embed_tokens, layers, norm.</summary>
public sealed class LlamaModel : Trunk
{
    private Tensor? _invFreq;   // fp32 rotary frequencies; deliberately not a module buffer (never saved, never cast)
    private RotaryCache? _rotary;   // cos / signed sin by position, grown on demand

    public Embedding embed_tokens { get; }
    public ModuleList<LlamaDecoderLayer> layers { get; }
    public RmsNorm norm { get; }

    public LlamaModel(ModelConfig c, ScalarType dtype, Device? device) : base("LlamaModel", c)
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize, device: device, dtype: dtype);
        layers = nn.ModuleList(Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new LlamaDecoderLayer(c, dtype, device)).ToArray());
        norm = new RmsNorm(c.HiddenSize, c.NormEps, dtype, device);
        register_module("embed_tokens", embed_tokens);
        register_module("layers", layers);
        register_module("norm", norm);
        _invFreq = Rotary.InverseFrequencies(c.HeadDim, c.RopeTheta, c.RopeScaling).DetachFromDisposeScope();
        // Built now, not on first use, so the tensors a model owns do not change while it runs; long-context configs
        // start with 4096 positions and grow when a forward needs more.
        _rotary = new RotaryCache(_invFreq, Math.Min(c.MaxPositionEmbeddings, 4096));
    }

    public override string Prefix => "model";

    /// <summary>cos and signed sin (N, hs) fp32 for positions 0..N-1, N at least <paramref name="length"/>.</summary>
    internal (Tensor Cos, Tensor SinSigned) RotaryTablesFor(long length) => _rotary!.Tables(length);
    protected override Parameter ReadTokenEmbedding() => embed_tokens.weight!;

    internal override bool IsIgnoredCheckpointKey(string key) => key.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    public override Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var (_, t, past, positions, mask, isCausal) = Prepare(inputIds, attentionMask, positionIds, cache);
        var x = ToComputeDType(embed_tokens.forward(inputIds));                         // (B, T, C)
        // Default positions never exceed past + T - 1 (cumsum of the mask - 1 included); explicit ones cost one reduction.
        long maxPosition = positionIds is null ? past + t - 1 : positions.max().item<long>();
        var rope = _rotary!.Lookup(positions, maxPosition, x.dtype);                      // (B, T, 1, hs)
        for (int i = 0; i < layers.Count; i++)
            x = layers[i].Forward(x, rope, mask, isCausal, cache, i);
        cache?.Advance(t);
        return norm.forward(x).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _invFreq?.Dispose();
            _invFreq = null;
            _rotary?.Dispose();
            _rotary = null;
        }
        base.Dispose(disposing);
    }
}
