// GPT-2: learned positions, pre-norm LayerNorm blocks, fused qkv Conv1D, GELU (tanh) MLP. Names follow
// transformers' modeling_gpt2.py. Dropout is left out: RLHF fine-tuning runs with dropout off (as TRL sets it).
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Models;

public sealed class Gpt2Attention : nn.Module
{
    private readonly int _heads, _headDim;
    public Conv1D c_attn { get; }
    public Conv1D c_proj { get; }

    public Gpt2Attention(ModelConfig c, ScalarType dtype, Device? device) : base("GPT2Attention")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        _heads = c.NumAttentionHeads;
        _headDim = c.HeadDim;
        c_attn = new Conv1D(c.HiddenSize, 3 * c.HiddenSize, dtype, device);
        c_proj = new Conv1D(c.HiddenSize, c.HiddenSize, dtype, device);
        register_module("c_attn", c_attn);
        register_module("c_proj", c_proj);
    }

    public Tensor Forward(Tensor x, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1], c = x.shape[2];
        var qkv = c_attn.forward(x).split(c, dim: 2);
        var q = qkv[0].view(b, t, _heads, _headDim).transpose(1, 2);   // (B, nh, T, hs)
        var k = qkv[1].view(b, t, _heads, _headDim).transpose(1, 2);
        var v = qkv[2].view(b, t, _heads, _headDim).transpose(1, 2);
        var y = Trunk.Attend(q, k, v, mask, isCausal, cache, layer);      // (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(b, t, c);
        return c_proj.forward(y).MoveToOuterDisposeScope();
    }
}

public sealed class Gpt2Mlp : nn.Module<Tensor, Tensor>
{
    private readonly Func<Tensor, Tensor> _act;
    public Conv1D c_fc { get; }
    public Conv1D c_proj { get; }

    public Gpt2Mlp(ModelConfig c, ScalarType dtype, Device? device) : base("GPT2MLP")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        _act = Activations.Get(c.HiddenAct);
        c_fc = new Conv1D(c.HiddenSize, c.IntermediateSize, dtype, device);
        c_proj = new Conv1D(c.IntermediateSize, c.HiddenSize, dtype, device);
        register_module("c_fc", c_fc);
        register_module("c_proj", c_proj);
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return c_proj.forward(_act(c_fc.forward(x))).MoveToOuterDisposeScope();
    }
}

public sealed class Gpt2Block : nn.Module
{
    public LayerNorm ln_1 { get; }
    public Gpt2Attention attn { get; }
    public LayerNorm ln_2 { get; }
    public Gpt2Mlp mlp { get; }

    public Gpt2Block(ModelConfig c, ScalarType dtype, Device? device) : base("GPT2Block")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        ln_1 = nn.LayerNorm(c.HiddenSize, c.NormEps, device: device, dtype: dtype);
        attn = new Gpt2Attention(c, dtype, device);
        ln_2 = nn.LayerNorm(c.HiddenSize, c.NormEps, device: device, dtype: dtype);
        mlp = new Gpt2Mlp(c, dtype, device);
        register_module("ln_1", ln_1);
        register_module("attn", attn);
        register_module("ln_2", ln_2);
        register_module("mlp", mlp);
    }

    public Tensor Forward(Tensor x, Tensor? mask, bool isCausal, KvCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        x = x + attn.Forward(Norms.Apply(ln_1, x), mask, isCausal, cache, layer);
        x = x + mlp.forward(Norms.Apply(ln_2, x));
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers' GPT2Model: wte, wpe, h, ln_f.</summary>
public sealed class Gpt2Model : Trunk
{
    public Embedding wte { get; }
    public Embedding wpe { get; }
    public ModuleList<Gpt2Block> h { get; }
    public LayerNorm ln_f { get; }

    public Gpt2Model(ModelConfig c, ScalarType dtype, Device? device) : base("GPT2Model", c)
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        wte = nn.Embedding(c.VocabSize, c.HiddenSize, device: device, dtype: dtype);
        wpe = nn.Embedding(c.MaxPositionEmbeddings, c.HiddenSize, device: device, dtype: dtype);
        h = nn.ModuleList(Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new Gpt2Block(c, dtype, device)).ToArray());
        ln_f = nn.LayerNorm(c.HiddenSize, c.NormEps, device: device, dtype: dtype);
        register_module("wte", wte);
        register_module("wpe", wpe);
        register_module("h", h);
        register_module("ln_f", ln_f);
    }

    public override string Prefix => "transformer";
    protected override Parameter ReadTokenEmbedding() => wte.weight!;

    // Old GPT-2 files carry the causal-mask buffers attn.bias / attn.masked_bias: not weights.
    internal override bool IsIgnoredCheckpointKey(string key) =>
        key.EndsWith(".attn.bias", StringComparison.Ordinal) || key.EndsWith(".attn.masked_bias", StringComparison.Ordinal);

    public override Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var (_, t, past, positions, mask, isCausal) = Prepare(inputIds, attentionMask, positionIds, cache);
        if (positionIds is null && past + t > Config.MaxPositionEmbeddings)
            throw new ArgumentException($"{past + t} positions exceed GPT-2's n_positions ({Config.MaxPositionEmbeddings})");
        var x = ToComputeDType(wte.forward(inputIds) + wpe.forward(positions));         // (B, T, C)
        for (int i = 0; i < h.Count; i++)
            x = h[i].Forward(x, mask, isCausal, cache, i);
        cache?.Advance(t);
        return Norms.Apply(ln_f, x).MoveToOuterDisposeScope();
    }
}
