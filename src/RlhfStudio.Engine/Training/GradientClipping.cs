using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Training;

/// <summary>Gradient-norm clipping, as <c>torch.nn.utils.clip_grad_norm_</c>.</summary>
public static class GradientClipping
{
    /// <summary>The total L2 norm of all gradients (the norm of the per-parameter norms, computed in fp32), measured
    /// before clipping (what transformers logs as <c>grad_norm</c>). When <paramref name="maxNorm"/> is positive every
    /// gradient is scaled by <c>min(1, maxNorm / (total + 1e-6))</c>. Parameters without a gradient are skipped.
    /// A non-finite total is returned as is and nothing is scaled: the caller decides what to do with the step.</summary>
    public static double ClipByTotalNorm(IEnumerable<NamedParameter> parameters, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var grads = parameters.Select(p => p.Parameter.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return 0;
        var norms = grads.Select(g => linalg.vector_norm(g.dtype == ScalarType.Float32 ? g : g.to(ScalarType.Float32), 2, null, false)).ToArray();
        double total = linalg.vector_norm(stack(norms), 2, null, false).item<float>();
        if (maxNorm > 0 && double.IsFinite(total))
        {
            double coefficient = Math.Min(1.0, maxNorm / (total + 1e-6));
            if (coefficient < 1.0)
            {
                using var c = coefficient.ToScalar();
                foreach (var g in grads) g.mul_(c);
            }
        }
        return total;
    }
}
