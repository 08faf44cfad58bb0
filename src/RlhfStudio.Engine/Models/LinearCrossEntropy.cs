// Token cross-entropy of a language model's head without materialising its logits (the idea of Liger kernel's fused
// linear cross-entropy, in libtorch ops). The rows are processed in chunks; each chunk's fp32 logits give its loss and
// argmax and, during the forward already, the gradient of the summed loss w.r.t. those logits (softmax - one-hot),
// which two matmuls turn at once into the gradients of the hidden states and of the head's weight. So the (N, V) fp32
// logits (67 MB at 2,048 tokens x 8,192, 1 GB at a 128k vocabulary) never exist, and the separate passes of
// cast / log_softmax / nll and their backwards over them shrink to one chunk that stays in cache. The backward then
// only scales the stored gradients by the incoming one.
using System.Runtime.CompilerServices;
using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

/// <summary>What <see cref="LinearCrossEntropy.Sum"/> counts besides the loss.</summary>
public sealed class TokenLossStats
{
    /// <summary>Labelled rows whose argmax logit is the target (train/mean_token_accuracy).</summary>
    public long Correct { get; internal set; }
    /// <summary>Labelled rows (targets other than the ignore index).</summary>
    public long Labelled { get; internal set; }
}

public static class LinearCrossEntropy
{
    public const long IgnoreIndex = -100;

    /// <summary>Rows per chunk: about 4 MB of fp32 logits, at least 32 and at most 1,024 rows.</summary>
    public static int ChunkRows(long vocab) => (int)Math.Clamp((1L << 22) / Math.Max(1, vocab), 32, 1024);

    /// <summary>Whether the CPU row kernels (<see cref="LinearLogProbs"/>) compute the loss of these operands: on a CPU
    /// with the kernels, for fp32 or bf16 matmuls. The loss is then minus the sum of the targets' log-probabilities, from
    /// one logits matmul in the matmul dtype and one row pass each way, with no fp32 logits at all.</summary>
    internal static bool UsesKernel(Tensor hidden) =>
        CpuKernels.IsSupported && hidden.device_type == DeviceType.CPU && hidden.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>Summed cross-entropy (fp32 scalar, with its graph) of the logits hidden W^T at <paramref name="targets"/>
    /// (rows whose target is <see cref="IgnoreIndex"/> count for nothing): the value and gradients of
    /// F.cross_entropy(linear(hidden, weight).float(), targets, reduction: sum), computed chunk by chunk.</summary>
    /// <param name="hidden">(N, C) in the matmul dtype.</param>
    /// <param name="weight">(V, C) in the matmul dtype (the cast of the fp32 master, when there is one, stays in the graph).</param>
    /// <param name="targets">(N) int64.</param>
    /// <param name="chunkRows">Rows per chunk of the libtorch path.</param>
    /// <param name="useKernel">Null = <see cref="UsesKernel"/>; false = libtorch ops only (the reference path).</param>
    public static Tensor Sum(Tensor hidden, Tensor weight, Tensor targets, TokenLossStats? stats = null, int? chunkRows = null, bool? useKernel = null)
    {
        if (hidden.ndim != 2 || weight.ndim != 2 || hidden.shape[1] != weight.shape[1])
            throw new ArgumentException($"hidden (N, C) and weight (V, C) must agree, got [{string.Join(", ", hidden.shape)}] and [{string.Join(", ", weight.shape)}]");
        if (targets.ndim != 1 || targets.shape[0] != hidden.shape[0] || targets.dtype != ScalarType.Int64)
            throw new ArgumentException($"targets must be (N) = ({hidden.shape[0]}) int64, got [{string.Join(", ", targets.shape)}] {targets.dtype}");
        if (hidden.dtype != weight.dtype) throw new ArgumentException($"hidden is {hidden.dtype}, weight {weight.dtype}: cast both to the matmul dtype");
        stats ??= new TokenLossStats();
        if (useKernel ?? UsesKernel(hidden))
        {
            using var scope = NewDisposeScope();
            var (logProbs, _) = LinearLogProbs.Compute(hidden, weight, targets, 1.0, withEntropy: false, stats, useKernel: true);
            return logProbs.sum().neg().MoveToOuterDisposeScope();
        }
        return Function.apply(hidden, weight, targets, stats, new StrongBox<int>(chunkRows ?? ChunkRows(weight.shape[0])));
    }

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "LinearCrossEntropy";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var hidden = (Tensor)vars[0];
            var weight = (Tensor)vars[1];
            var targets = (Tensor)vars[2];
            var stats = (TokenLossStats)vars[3];
            int chunk = ((StrongBox<int>)vars[4]).Value;
            bool gradHidden = hidden.requires_grad, gradWeight = weight.requires_grad;
            long n = hidden.shape[0], c = hidden.shape[1], v = weight.shape[0];

            var hiddenGrad = gradHidden ? torch.empty([n, c], dtype: hidden.dtype, device: hidden.device) : null;
            // d loss / d logits of every row, in the matmul dtype: the weight's gradient is one (V, N) x (N, C) matmul at
            // the end (per-chunk products with a short inner dimension, added into a (V, C) accumulator, were slower).
            var logitsGrad = gradWeight ? torch.empty([n, v], dtype: hidden.dtype, device: hidden.device) : null;
            var loss = torch.zeros([], dtype: ScalarType.Float64, device: hidden.device);
            long correct = 0, labelled = 0;
            using var ignore = IgnoreIndex.ToScalar();
            using var minusOne = (-1.0).ToScalar();
            for (long start = 0; start < n; start += chunk)
            {
                using var scope = NewDisposeScope();
                long rows = Math.Min(chunk, n - start);
                var h = hidden.narrow(0, start, rows);
                var t = targets.narrow(0, start, rows);
                var valid = t.ne(ignore);                                                  // (n)
                var index = t.masked_fill(valid.logical_not(), 0).unsqueeze(1);            // (n, 1): ignored rows read column 0
                var logits = torch.mm(h, weight.t()).to(ScalarType.Float32);               // (n, V)
                var lse = logits.logsumexp(-1, keepdim: true);                             // (n, 1)
                var picked = logits.gather(1, index);                                      // (n, 1)
                var weightOfRow = valid.to(ScalarType.Float32).unsqueeze(1);               // (n, 1): 1 labelled, 0 ignored
                loss.add_((lse - picked).mul_(weightOfRow).sum().to(ScalarType.Float64));
                correct += logits.argmax(-1).eq(t).logical_and(valid).sum().item<long>();
                labelled += valid.sum().item<long>();
                if (hiddenGrad is null && logitsGrad is null) continue;
                // d(sum of losses)/d(logits) = softmax - one-hot, 0 on ignored rows; made in place in the logits buffer.
                var grad = logits.sub_(lse).exp_();
                grad.scatter_add_(1, index, weightOfRow.mul(minusOne));
                grad.mul_(weightOfRow);
                var g = logitsGrad is null ? grad.to(hidden.dtype) : logitsGrad.narrow(0, start, rows).copy_(grad);   // (n, V) matmul dtype
                if (hiddenGrad is not null) hiddenGrad.narrow(0, start, rows).copy_(torch.mm(g, weight));
            }
            var weightGrad = logitsGrad is null ? null : torch.mm(logitsGrad.t(), hidden);    // (V, C)
            logitsGrad?.Dispose();
            stats.Correct += correct;
            stats.Labelled += labelled;
            var saved = new List<Tensor>();
            if (hiddenGrad is not null) saved.Add(hiddenGrad);
            if (weightGrad is not null) saved.Add(weightGrad.dtype == weight.dtype ? weightGrad : weightGrad.to(weight.dtype));
            ctx.save_for_backward(saved);
            ctx.save_data("hidden", gradHidden);
            ctx.save_data("weight", gradWeight);
            return loss.to(ScalarType.Float32);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            bool hasHidden = (bool)ctx.get_data("hidden"), hasWeight = (bool)ctx.get_data("weight");
            // One scale for every element (the loss is a scalar): a Scalar multiply rounds once in the gradients' dtype.
            using var scale = gradOutput.to(ScalarType.Float64).item<double>().ToScalar();
            int i = 0;
            var hiddenGrad = hasHidden ? saved[i++].mul(scale) : null;
            var weightGrad = hasWeight ? saved[i++].mul(scale) : null;
            return [hiddenGrad!, weightGrad!, null!, null!, null!];   // TorchSharp reads null as "no gradient"
        }
    }
}
