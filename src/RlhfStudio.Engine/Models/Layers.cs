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
        _ when IsSilu(name) => x => F.silu(x),
        "gelu" => x => F.gelu(x),
        // gelu_new is 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))): the same function as torch's tanh approximation.
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => x => F.gelu(x, GELU.Approximate.tanh),
        "relu" => x => F.relu(x),
        _ => null,
    };

    /// <summary>Whether <paramref name="name"/> is SiLU (x sigmoid(x)), the activation of SwiGLU MLPs.</summary>
    public static bool IsSilu(string name) => name is "silu" or "swish";

    public static Func<Tensor, Tensor> Get(string name) =>
        Find(name) ?? throw new NotSupportedException($"activation \"{name}\" is not supported");
}

/// <summary>Scalars made once. TorchSharp's tensor operators and one-argument add/sub make a native Scalar 1 on every
/// call that no dispose scope frees; hot paths pass these instead.</summary>
internal static class Scalars
{
    public static readonly Scalar One = 1.ToScalar();
}

/// <summary>Root-mean-square norm as in transformers' LlamaRMSNorm: statistics in fp32, cast back to the input
/// dtype, then times the weight.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter _weight;
    private readonly Scalar _eps;   // made once: a Scalar per call is native memory no dispose scope frees
    private readonly double _epsValue;

    public RmsNorm(long size, double eps, ScalarType dtype, Device? device) : base("RmsNorm")
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        _weight = new Parameter(torch.ones(size, dtype: dtype, device: device));
        _eps = eps.ToScalar();
        _epsValue = eps;
        register_parameter("weight", _weight);
    }

    public Parameter weight => _weight;

    public override Tensor forward(Tensor x) => forward(x, useKernel: true);

    /// <param name="useKernel">false = libtorch ops even where <see cref="RmsNormFunction"/> covers x (the reference path).</param>
    internal Tensor forward(Tensor x, bool useKernel)
    {
        using var scope = NewDisposeScope();
        // On a CPU: one kernel pass each way instead of the ops below and their backwards (the forward alone without a graph).
        if (useKernel && RmsNormFunction.Covers(x, _weight))
            return (torch.is_grad_enabled() ? RmsNormFunction.Apply(x, _weight, _epsValue) : RmsNormFunction.Infer(x, _weight, _epsValue)).MoveToOuterDisposeScope();
        var h = x.to(ScalarType.Float32);
        if (torch.is_grad_enabled())
        {
            var variance = h.pow(2).mean([-1], keepdim: true);
            h = h * torch.rsqrt(variance + _eps);
        }
        else
        {
            // The same values with fewer allocations (a decode step runs 2 x layers + 1 norms on tiny tensors). When x
            // is already fp32, to() returned x itself, which must not be overwritten.
            var scale = h.square().mean([-1], keepdim: true).add_(_eps).rsqrt_();
            h = x.dtype == ScalarType.Float32 ? h * scale : h.mul_(scale);
        }
        var y = _weight * h.to(x.dtype);
        // fp32 weight on bf16 activations (compute dtype): the product promotes to fp32; round it once, back to the
        // activations' dtype, as the next projection would under autocast.
        if (y.dtype != x.dtype) y = y.to(x.dtype);
        return y.MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _eps.Dispose();
        base.Dispose(disposing);
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

    /// <summary>x * cos + rotate_half(x) * sin for x (B, T, n, hs), heads last-but-one, with tables from
    /// <see cref="RotaryTables"/>: rotate_half(x) * sin = roll(x, hs/2) * [-sin_1, sin_2], the same products (a negation
    /// is exact) in three ops fewer than slicing, negating and concatenating.</summary>
    internal static Tensor Apply(Tensor x, RotaryTables rope)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var y = x * rope.Cos;
        var rotated = x.roll(half, -1).mul_(rope.SinSigned);
        // add(t, alpha) with a shared Scalar: the operator would make (and leak to the finalizer) a Scalar 1 per call.
        return (torch.is_grad_enabled() ? y.add(rotated, Scalars.One) : y.add_(rotated, Scalars.One)).MoveToOuterDisposeScope();
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

/// <summary>Rotary tables for one forward, shaped (B, T, 1, hs) to broadcast over heads in (B, T, n, hs) layout:
/// cos, and sin with its first half negated (see <see cref="Rotary.Apply(Tensor, RotaryTables)"/>), in the compute dtype;
/// and, when known, the same in fp32 as (B, T, hs) contiguous for the attention kernels, which rotate in fp32.</summary>
internal readonly record struct RotaryTables(Tensor Cos, Tensor SinSigned, Tensor? Cos32 = null, Tensor? SinSigned32 = null)
{
    /// <summary>From cos/sin (B, T, hs) as <see cref="Rotary.CosSin"/> returns them (new tensors in the current scope),
    /// with the fp32 tables too.</summary>
    public static RotaryTables From(Tensor cos, Tensor sin)
    {
        long half = sin.shape[^1] / 2;
        var signs = torch.cat([torch.full(half, -1, dtype: sin.dtype, device: sin.device), torch.ones(half, dtype: sin.dtype, device: sin.device)]);
        var signed = sin * signs;
        return new RotaryTables(cos.unsqueeze(2), signed.unsqueeze(2), cos.to(ScalarType.Float32).contiguous(), signed.to(ScalarType.Float32).contiguous());
    }
}

/// <summary>cos and signed sin for positions 0..N-1, computed once in fp32 exactly as <see cref="Rotary.CosSin"/>
/// computes them (positions in fp32 times inv_freq) and looked up by position on each forward instead of being
/// recomputed (six ops with trigonometry per forward, every decode step). Grown on demand past N.</summary>
internal sealed class RotaryCache : IDisposable
{
    private readonly Tensor _invFreq;
    private Tensor? _cos, _sinSigned;   // (N, hs) fp32
    private long _length;

    public RotaryCache(Tensor invFreq, long length)
    {
        _invFreq = invFreq;
        Grow(length);
    }

    /// <summary>Tables for <paramref name="positions"/> (B, T), all below or at <paramref name="maxPosition"/>, in <paramref name="dtype"/>.</summary>
    public RotaryTables Lookup(Tensor positions, long maxPosition, ScalarType dtype)
    {
        Tables(maxPosition + 1);
        long b = positions.shape[0], n = positions.shape[1], hs = _cos!.shape[1];
        var index = positions.reshape(-1);
        var cos32 = _cos.index_select(0, index).view(b, n, hs);
        var sin32 = _sinSigned!.index_select(0, index).view(b, n, hs);
        var (cos, sin) = (cos32.unsqueeze(2), sin32.unsqueeze(2));
        return dtype == ScalarType.Float32 ? new RotaryTables(cos, sin, cos32, sin32) : new RotaryTables(cos.to(dtype), sin.to(dtype), cos32, sin32);
    }

    /// <summary>The whole tables (N, hs) fp32, grown first to at least <paramref name="length"/> positions.</summary>
    public (Tensor Cos, Tensor SinSigned) Tables(long length)
    {
        if (length > _length) Grow(Math.Max(2 * _length, length));
        return (_cos!, _sinSigned!);
    }

    private void Grow(long length)
    {
        Dispose();
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var positions = torch.arange(length, dtype: ScalarType.Int64, device: _invFreq.device).unsqueeze(0);   // (1, N)
        var (cos, sin) = Rotary.CosSin(_invFreq, positions, ScalarType.Float32);                                // (1, N, hs)
        var signed = RotaryTables.From(cos, sin).SinSigned;                                                      // (1, N, 1, hs)
        _cos = cos.squeeze(0).contiguous().DetachFromDisposeScope();
        _sinSigned = signed.squeeze(0).squeeze(1).contiguous().DetachFromDisposeScope();
        _length = length;
    }

    public void Dispose()
    {
        _cos?.Dispose();
        _sinSigned?.Dispose();
        _cos = _sinSigned = null;
        _length = 0;
    }
}
