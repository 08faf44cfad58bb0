// One LoRA adapter as PEFT's lora.Linear defines it: A [r, in], B [out, r], scaling = alpha / r, dropout on the
// adapter's input. The two matrices are modules holding one "weight" each, so that inside a projection they are named
// "lora_A.weight" and "lora_B.weight": PEFT's names without the adapter name, which is also how PEFT saves them.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Adapters;

/// <summary>A LoRA matrix (PEFT's lora_A / lora_B nn.Linear without bias; only its weight matters).</summary>
public sealed class LoraMatrix : nn.Module
{
    private readonly Parameter _weight;

    internal LoraMatrix(string name, Tensor weight) : base(name)
    {
        RegisterComponents();   // before any field is set: see Models/Trunk.cs
        _weight = new Parameter(weight);
        register_parameter("weight", _weight);
    }

    public Parameter weight => _weight;
}

/// <summary>The adapter attached to one <see cref="Models.Projection"/>.</summary>
public sealed class LoraAdapter : IDisposable
{
    internal LoraAdapter(Tensor a, Tensor b, double alpha, double dropout)
    {
        if (a.ndim != 2 || b.ndim != 2 || a.shape[0] != b.shape[1])
            throw new ArgumentException($"LoRA A [{string.Join(", ", a.shape)}] and B [{string.Join(", ", b.shape)}] must be [r, in] and [out, r]");
        Rank = (int)a.shape[0];
        Alpha = alpha;
        Dropout = dropout;
        A = new LoraMatrix("lora_A", a);
        B = new LoraMatrix("lora_B", b);
    }

    public LoraMatrix A { get; }
    public LoraMatrix B { get; }
    public int Rank { get; }
    public double Alpha { get; }
    /// <summary>alpha / r (PEFT without rsLoRA).</summary>
    public double Scaling => Alpha / Rank;
    public double Dropout { get; }
    /// <summary>Off: the projection is exactly its base layer (PEFT's disable_adapter).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>B(A(dropout(x))) * scaling, computed in <paramref name="computeDType"/> or, unset, in the adapter's dtype
    /// (PEFT casts the input to lora_A's dtype).</summary>
    public Tensor Delta(Tensor x, ScalarType? computeDType, bool training)
    {
        using var scope = NewDisposeScope();
        var dtype = computeDType ?? A.weight.dtype;
        var h = x.dtype == dtype ? x : x.to(dtype);
        if (Dropout > 0 && training) h = F.dropout(h, Dropout, training: true);
        var a = A.weight.dtype == dtype ? A.weight : A.weight.to(dtype);
        var b = B.weight.dtype == dtype ? B.weight : B.weight.to(dtype);
        using var scaling = Scaling.ToScalar();
        return F.linear(F.linear(h, a), b).mul(scaling).MoveToOuterDisposeScope();
    }

    /// <summary>The update of the base weight, (B @ A) * scaling, in fp32 (as PEFT's get_delta_weight does for
    /// half-precision adapters on CPU), transposed to [in, out] when the weight is stored that way.</summary>
    public Tensor DeltaWeight(bool fanInFanOut)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        using var scaling = Scaling.ToScalar();
        var delta = torch.mm(B.weight.to(ScalarType.Float32), A.weight.to(ScalarType.Float32)).mul(scaling);
        if (fanInFanOut) delta = delta.t().contiguous();
        return delta.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}
