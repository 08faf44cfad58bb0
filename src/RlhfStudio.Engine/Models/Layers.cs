// Small building blocks shared by the architectures: activations, RMSNorm, LayerNorm under a compute dtype, rotary
// embeddings. The projections (nn.Linear / GPT-2's Conv1D) are in Projection.cs.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Models;

/// <summary>The hidden activations config.json may name (transformers' ACT2FN keys we support).</summary>
public static class Activations
{
    public static IReadOnlyList<string> Names { get; } = ["silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu"];

    public static Func<Tensor, Tensor>? Find(string name) => name switch
    {
        "silu" or "swish" => x => F.silu(x),
        "gelu" => x => F.gelu(x),
        // gelu_new is 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))): the same function as torch's tanh approximation.
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => x => F.gelu(x, GELU.Approximate.tanh),
        "relu" => x => F.relu(x),
        _ => null,
    };

    public static Func<Tensor, Tensor> Get(string name) =>
        Find(name) ?? throw new NotSupportedException($"activation \"{name}\" is not supported");
}

/// <summary>Root-mean-square norm as in transformers' LlamaRMSNorm: statistics in fp32, cast back to the input
/// dtype, then times the weight.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter _weight;
    private readonly double _eps;

    public RmsNorm(long size, double eps, ScalarType dtype, Device? device) : base("RmsNorm")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        _weight = new Parameter(torch.ones(size, dtype: dtype, device: device));
        _eps = eps;
        register_parameter("weight", _weight);
    }

    public Parameter weight => _weight;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.to(ScalarType.Float32);
        var variance = h.pow(2).mean([-1], keepdim: true);
        h = h * torch.rsqrt(variance + _eps);
        var y = _weight * h.to(x.dtype);
        // fp32 weight on bf16 activations (compute dtype): the product promotes to fp32; round it once, back to the
        // activations' dtype, as the next projection would under autocast.
        if (y.dtype != x.dtype) y = y.to(x.dtype);
        return y.MoveToOuterDisposeScope();
    }
}

/// <summary>LayerNorm in its weight's dtype (fp32 for fp32 master weights), result cast back to the input's dtype: what
/// torch.autocast does (layer_norm runs in fp32) before the next projection casts to the compute dtype again.</summary>
public static class Norms
{
    public static Tensor Apply(LayerNorm norm, Tensor x)
    {
        var dtype = norm.weight?.dtype ?? x.dtype;
        if (x.dtype == dtype) return norm.forward(x);
        using var input = x.to(dtype);
        using var y = norm.forward(input);
        return y.to(x.dtype);
    }
}

/// <summary>Rotary position embeddings with transformers' conventions (rotate_half, frequencies in fp32,
/// optional Llama 3 frequency scaling).</summary>
public static class Rotary
{
    /// <summary>inv_freq [headDim/2] in fp32: 1 / theta^(2i/d), then Llama 3 scaling if configured
    /// (transformers' <c>_compute_default_rope_parameters</c> and <c>_compute_llama3_parameters</c>).</summary>
    public static Tensor InverseFrequencies(int headDim, double theta, RopeScaling? scaling)
    {
        using var scope = NewDisposeScope();
        var exponents = torch.arange(0, headDim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / headDim;
        var invFreq = 1.0f / torch.pow(theta, exponents);
        if (scaling is { } s)
        {
            double lowFreqWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
            double highFreqWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
            var wavelen = 2 * Math.PI / invFreq;
            // wavelen < high_freq_wavelen: unchanged; wavelen > low_freq_wavelen: divided by factor.
            var invFreqLlama = torch.where(wavelen > lowFreqWavelen, invFreq / s.Factor, invFreq);
            // In between: interpolate smoothly.
            var smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
            var smoothed = (1 - smooth) * invFreqLlama / s.Factor + smooth * invFreqLlama;
            var isMedium = (wavelen < highFreqWavelen).logical_not().logical_and((wavelen > lowFreqWavelen).logical_not());
            invFreq = torch.where(isMedium, smoothed, invFreqLlama);
        }
        return invFreq.MoveToOuterDisposeScope();
    }

    /// <summary>cos and sin [B, T, headDim] for positions [B, T], computed in fp32, returned in <paramref name="dtype"/>.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor invFreq, Tensor positionIds, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var freqs = positionIds.to(ScalarType.Float32).unsqueeze(-1) * invFreq.to(positionIds.device);   // (B, T, D/2)
        var emb = torch.cat([freqs, freqs], dim: -1);                                                        // (B, T, D)
        var cos = emb.cos().to(dtype).MoveToOuterDisposeScope();
        var sin = emb.sin().to(dtype).MoveToOuterDisposeScope();
        return (cos, sin);
    }

    /// <summary>x * cos + rotate_half(x) * sin with x (B, nh, T, hs) and cos/sin (B, T, hs).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = torch.cat([-x2, x1], dim: -1);
        return (x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)).MoveToOuterDisposeScope();
    }
}
