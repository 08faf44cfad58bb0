// Our linear layer. Every projection of the models (q/k/v/o, MLP, lm_head, score, GPT-2's Conv1D) is one of these, so
// that two things TorchSharp lacks can live in one place: a compute dtype (our stand-in for autocast) and LoRA adapters.
// Parameter names stay Hugging Face's ("weight", "bias"); an adapter adds "lora_A.weight" / "lora_B.weight" children.
using RlhfStudio.Engine.Adapters;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Models;

/// <summary>y = x W^T + b, with W stored [out, in] (nn.Linear) or [in, out] (<see cref="FanInFanOut"/>, GPT-2's Conv1D).
/// <para>Compute dtype: when <see cref="ComputeDType"/> is set, input, weight and bias are cast to it for the matmul.
/// The casts are part of the graph, so gradients flow back into the weights in their own (master) dtype, as under
/// torch.autocast. Unset, the layer computes in the weight's dtype.</para>
/// <para>LoRA: with an adapter attached, y = base(x) + B(A(dropout(x))) * alpha / r, exactly as PEFT's lora.Linear.</para></summary>
public class Projection : nn.Module<Tensor, Tensor>, IInferenceWeights
{
    private Tensor? _inferenceWeight, _inferenceBias;   // compute-dtype copies inside an inference-weights scope

    private readonly Parameter _weight;
    private readonly Parameter? _bias;

    public Projection(long inFeatures, long outFeatures, bool hasBias, ScalarType dtype, Device? device)
        : this("Linear", inFeatures, outFeatures, hasBias, fanInFanOut: false, dtype, device)
    {
    }

    protected Projection(string name, long inFeatures, long outFeatures, bool hasBias, bool fanInFanOut, ScalarType dtype, Device? device)
        : base(name)
    {
        RegisterComponents();   // before any field is set: see Trunk.cs
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        FanInFanOut = fanInFanOut;
        var w = fanInFanOut ? torch.empty([inFeatures, outFeatures], dtype: dtype, device: device)
                            : torch.empty([outFeatures, inFeatures], dtype: dtype, device: device);
        var b = hasBias ? torch.zeros(outFeatures, dtype: dtype, device: device) : null;
        using (torch.no_grad())
        {
            if (fanInFanOut)
            {
                w.normal_(0, 0.02);   // transformers' Conv1D init
            }
            else
            {
                // nn.Linear's default init (and TorchSharp's Linear, whose draws this reproduces): kaiming-uniform(a=sqrt(5)), bias U(+-1/sqrt(in)).
                nn.init.kaiming_uniform_(w, a: Math.Sqrt(5));
                if (b is not null && inFeatures > 0) nn.init.uniform_(b, -1.0 / Math.Sqrt(inFeatures), 1.0 / Math.Sqrt(inFeatures));
            }
        }
        _weight = new Parameter(w);
        register_parameter("weight", _weight);
        if (b is not null)
        {
            _bias = new Parameter(b);
            register_parameter("bias", _bias);
        }
    }

    public Parameter weight => _weight;
    public Parameter? bias => _bias;
    public long InFeatures { get; }
    public long OutFeatures { get; }
    /// <summary>The weight is stored [in, out] (GPT-2's Conv1D; PEFT's fan_in_fan_out).</summary>
    public bool FanInFanOut { get; }

    /// <summary>dtype of the matmul; null = the weight's dtype. Set model-wide with <see cref="TransformerModel.ComputeDType"/>.</summary>
    public ScalarType? ComputeDType { get; set; }

    /// <summary>The LoRA adapter, when one is attached (see <see cref="Lora.Apply"/>).</summary>
    public LoraAdapter? Adapter { get; private set; }

    /// <summary>The adapter's update is folded into <see cref="weight"/>; the adapter path is skipped.</summary>
    public bool Merged { get; private set; }

    /// <summary>No adapter contributes to the output: the layer is exactly x W^T + b (layers may then fuse it with
    /// their neighbours into one matmul).</summary>
    internal bool IsPlain => Adapter is not { Enabled: true } || Merged;

    /// <summary>The dtype the matmul runs in.</summary>
    internal ScalarType MatmulDType => ComputeDType ?? _weight.dtype;

    /// <summary>The weight [out, in] and bias a no-grad forward multiplies by when that is the whole layer (no active
    /// adapter): see <see cref="InferenceBaseWeights"/>.</summary>
    internal (Tensor Weight, Tensor? Bias)? InferenceWeights() => IsPlain ? InferenceBaseWeights() : null;

    /// <summary>The base weight [out, in] and bias in the matmul dtype for a no-grad forward, whatever the adapter: the
    /// inference copies of an open scope, or the parameters when no cast is needed; null for Conv1D storage or when a
    /// cast is needed and no scope is open.</summary>
    internal (Tensor Weight, Tensor? Bias)? InferenceBaseWeights()
    {
        if (FanInFanOut) return null;
        if (_inferenceWeight is not null) return (_inferenceWeight, _inferenceBias);
        return MatmulDType == _weight.dtype ? (_weight, _bias) : null;
    }

    /// <summary>The adapter that adds to this layer's output now (attached, enabled, not merged), else null.</summary>
    internal LoraAdapter? ActiveAdapter => Adapter is { Enabled: true } adapter && !Merged ? adapter : null;

    void IInferenceWeights.CacheInferenceWeights()
    {
        // No cast needed (weights already in the matmul dtype) or GPT-2's transposed Conv1D storage: nothing to cache.
        if (FanInFanOut || MatmulDType == _weight.dtype) return;
        _inferenceWeight = InferenceCopies.Make(_weight, MatmulDType);
        _inferenceBias = _bias is null ? null : InferenceCopies.Make(_bias, MatmulDType);
    }

    void IInferenceWeights.DropInferenceWeights()
    {
        _inferenceWeight?.Dispose();
        _inferenceBias?.Dispose();
        _inferenceWeight = _inferenceBias = null;
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = _inferenceWeight is not null && !torch.is_grad_enabled()
            ? Linear(x, _inferenceWeight, _inferenceBias, MatmulDType)
            : Linear(x, _weight, _bias, ComputeDType, FanInFanOut);
        if (Adapter is { Enabled: true } adapter && !Merged)
            y = y + adapter.Delta(x, ComputeDType, training).to(y.dtype);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>F.linear in <paramref name="computeDType"/> (default: the weight's dtype), casting input, weight and bias
    /// as needed; <paramref name="fanInFanOut"/> = weight stored [in, out]. Also used for tied LM heads.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias, ScalarType? computeDType, bool fanInFanOut = false)
    {
        using var scope = NewDisposeScope();
        var dtype = computeDType ?? weight.dtype;
        var input = x.dtype == dtype ? x : x.to(dtype);
        var w = weight.dtype == dtype ? weight : weight.to(dtype);
        if (fanInFanOut) w = w.t();   // a view: linear() wants [out, in]
        var b = bias is null || bias.dtype == dtype ? bias : bias.to(dtype);
        return F.linear(input, w, b).MoveToOuterDisposeScope();
    }

    internal void Attach(LoraAdapter adapter)
    {
        if (Adapter is not null) throw new InvalidOperationException("this projection already has a LoRA adapter");
        if (adapter.A.weight.shape[1] != InFeatures || adapter.B.weight.shape[0] != OutFeatures)
            throw new ArgumentException($"adapter shapes A [{string.Join(", ", adapter.A.weight.shape)}], B [{string.Join(", ", adapter.B.weight.shape)}] do not fit a projection {InFeatures} -> {OutFeatures}");
        register_module("lora_A", adapter.A);
        register_module("lora_B", adapter.B);
        Adapter = adapter;
        Merged = false;
    }

    /// <summary>Removes the adapter (merged or not: a merged update stays in the weight) and disposes it.</summary>
    internal void Detach()
    {
        if (Adapter is not { } adapter) return;
        _internal_submodules.Remove("lora_A");
        _internal_submodules.Remove("lora_B");
        Adapter = null;
        Merged = false;
        adapter.Dispose();
    }

    /// <summary>W += delta (PEFT's merge): the adapter's output is then part of the base path.</summary>
    internal void Merge()
    {
        if (Adapter is not { } adapter || Merged) return;
        using var noGrad = torch.no_grad();
        using var delta = adapter.DeltaWeight(FanInFanOut);
        using var cast = delta.to(_weight.dtype);
        _weight.add_(cast);
        Merged = true;
    }

    /// <summary>W -= delta: the exact inverse of <see cref="Merge"/> up to float rounding.</summary>
    internal void Unmerge()
    {
        if (Adapter is not { } adapter || !Merged) return;
        using var noGrad = torch.no_grad();
        using var delta = adapter.DeltaWeight(FanInFanOut);
        using var cast = delta.to(_weight.dtype);
        _weight.sub_(cast);
        Merged = false;
    }
}

/// <summary>GPT-2's Conv1D: a linear layer whose weight is stored [in, out] (transposed against nn.Linear), with bias.</summary>
public sealed class Conv1D : Projection
{
    public Conv1D(long inFeatures, long outFeatures, ScalarType dtype, Device? device)
        : base("Conv1D", inFeatures, outFeatures, hasBias: true, fanInFanOut: true, dtype, device)
    {
    }

    public new Parameter bias => base.bias!;
}
