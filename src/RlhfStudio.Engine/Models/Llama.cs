// The Llama family (Llama, Mistral, Qwen2): pre-norm decoder with RMSNorm, rotary embeddings, grouped-query
// attention and a SwiGLU MLP. Module and parameter names follow transformers' modeling_llama.py so that
// state_dict() keys equal the safetensors keys.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Models;

public sealed class LlamaAttention : nn.Module
{
    private readonly int _heads, _kvHeads, _headDim;
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

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.forward(x).view(b, t, _heads, _headDim).transpose(1, 2);      // (B, nh, T, hs)
        var k = k_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);    // (B, kvh, T, hs)
        var v = v_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);    // (B, kvh, T, hs)
        q = Rotary.Apply(q, cos, sin);
        k = Rotary.Apply(k, cos, sin);
        if (cache is not null) (k, v) = cache.Append(layer, k, v);                     // (B, kvh, past+T, hs)
        // SDPA here has no GQA: give every query head its own copy of its kv head.
        k = Trunk.RepeatKv(k, _heads / _kvHeads);
        v = Trunk.RepeatKv(v, _heads / _kvHeads);
        var y = F.scaled_dot_product_attention(q, k, v, attn_mask: mask, is_casual: isCausal);   // (B, nh, T, hs); scale 1/sqrt(hs)
        y = y.transpose(1, 2).reshape(b, t, _heads * _headDim);
        return o_proj.forward(y).MoveToOuterDisposeScope();
    }
}

public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    private readonly Func<Tensor, Tensor> _act;
    public Projection gate_proj { get; }
    public Projection up_proj { get; }
    public Projection down_proj { get; }

    public LlamaMlp(ModelConfig c, ScalarType dtype, Device? device) : base("LlamaMlp")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        _act = Activations.Get(c.HiddenAct);
        gate_proj = new Projection(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype, device);
        up_proj = new Projection(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype, device);
        down_proj = new Projection(c.IntermediateSize, c.HiddenSize, c.MlpBias, dtype, device);
        register_module("gate_proj", gate_proj);
        register_module("up_proj", up_proj);
        register_module("down_proj", down_proj);
    }

    // down(act(gate(x)) * up(x))
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.forward(_act(gate_proj.forward(x)) * up_proj.forward(x)).MoveToOuterDisposeScope();
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

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        x = x + self_attn.Forward(input_layernorm.forward(x), cos, sin, mask, isCausal, cache, layer);
        x = x + mlp.forward(post_attention_layernorm.forward(x));
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers' LlamaModel (also Mistral, Qwen2): embed_tokens, layers, norm.</summary>
public sealed class LlamaModel : Trunk
{
    private Tensor? _invFreq;   // fp32 rotary frequencies; deliberately not a module buffer (never saved, never cast)

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
    }

    public override string Prefix => "model";
    protected override Parameter ReadTokenEmbedding() => embed_tokens.weight!;

    internal override bool IsIgnoredCheckpointKey(string key) => key.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    public override Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var (_, t, _, positions, mask, isCausal) = Prepare(inputIds, attentionMask, positionIds, cache);
        var x = ToComputeDType(embed_tokens.forward(inputIds));                         // (B, T, C)
        var (cos, sin) = Rotary.CosSin(_invFreq!, positions, x.dtype);                 // (B, T, hs)
        for (int i = 0; i < layers.Count; i++)
            x = layers[i].Forward(x, cos, sin, mask, isCausal, cache, i);
        cache?.Advance(t);
        return norm.forward(x).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _invFreq?.Dispose();
            _invFreq = null;
        }
        base.Dispose(disposing);
    }
}
