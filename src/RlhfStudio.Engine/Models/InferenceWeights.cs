// Inference copies of the weights in the compute dtype (and fused where layers can use one matmul for several
// projections). With fp32 master weights and bf16 compute, every forward casts every weight to bf16; in a decode
// loop that is one full pass over the weights per generated token, more than the matmuls themselves at batch 8.
// Inside a scope opened with TransformerModel.UseInferenceWeights() the casts (and concatenations) are made once and
// reused by every no-grad forward; forwards that record gradients ignore them, so training is unaffected.
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

/// <summary>A module that can keep compute-dtype copies of its weights for no-grad forwards.</summary>
internal interface IInferenceWeights
{
    /// <summary>Makes the copies (called once when the outermost scope opens).</summary>
    void CacheInferenceWeights();

    /// <summary>Disposes the copies (called when the outermost scope closes).</summary>
    void DropInferenceWeights();
}

/// <summary>The open scope of <see cref="TransformerModel.UseInferenceWeights"/>. The weights must not change while it
/// is open (the copies would be stale): open it around generation or scoring, never around an optimiser step.</summary>
public sealed class InferenceWeightsScope : IDisposable
{
    private TransformerModel? _model;

    internal InferenceWeightsScope(TransformerModel model) => _model = model;

    public void Dispose()
    {
        _model?.CloseInferenceWeights();
        _model = null;
    }
}

internal static class InferenceCopies
{
    /// <summary><paramref name="weight"/> in <paramref name="dtype"/> as a detached tensor that outlives dispose scopes.</summary>
    public static Tensor Make(Tensor weight, ScalarType dtype)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var copy = weight.dtype == dtype ? weight.detach().clone() : weight.detach().to(dtype);
        return copy.DetachFromDisposeScope();
    }

    /// <summary>Row-wise concatenation of <paramref name="weights"/> in <paramref name="dtype"/>, detached.</summary>
    public static Tensor Concat(IReadOnlyList<Tensor> weights, ScalarType dtype)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var cat = torch.cat(weights.Select(w => w.detach()).ToList(), 0);
        return (cat.dtype == dtype ? cat : cat.to(dtype)).DetachFromDisposeScope();
    }
}
