// Per-token log-probabilities of a language model's head, log_softmax(h W^T / d)[target] (TRL's selective_log_softmax
// after its division by temperature + 1e-7), with their gradient and, for metrics, the entropy of each distribution.
// On a CPU with the kernels: one logits matmul in the matmul dtype, then one row pass (CpuKernels.TokenLogProbRows)
// instead of cast to fp32, divide, log_softmax, gather, softmax and logsumexp for the entropy, and one row pass back
// instead of the backwards of the first four, each a pass over (N, V) fp32 tensors.
using System.Runtime.CompilerServices;
using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Models;

public static class LinearLogProbs
{
    /// <summary>Log-probabilities (N) fp32, with their graph, of <paramref name="targets"/> (N; <see cref="LinearCrossEntropy.IgnoreIndex"/>
    /// = 0 and no gradient) under logits <paramref name="hidden"/> W^T / <paramref name="divisor"/>, and with
    /// <paramref name="withEntropy"/> the entropies (N) fp32 of those distributions (no graph).</summary>
    /// <param name="hidden">(N, C) in the matmul dtype.</param>
    /// <param name="weight">(V, C) in the matmul dtype.</param>
    /// <param name="useKernel">Null = when <see cref="LinearCrossEntropy.UsesKernel"/>; false = libtorch ops (the reference path).</param>
    /// <param name="stats">Counts labelled rows and those whose first maximal logit is the target, when given.</param>
    public static (Tensor LogProbs, Tensor? Entropy) Compute(Tensor hidden, Tensor weight, Tensor targets, double divisor, bool withEntropy,
        TokenLossStats? stats = null, bool? useKernel = null)
    {
        if (hidden.ndim != 2 || weight.ndim != 2 || hidden.shape[1] != weight.shape[1])
            throw new ArgumentException($"hidden (N, C) and weight (V, C) must agree, got [{string.Join(", ", hidden.shape)}] and [{string.Join(", ", weight.shape)}]");
        if (targets.ndim != 1 || targets.shape[0] != hidden.shape[0] || targets.dtype != ScalarType.Int64)
            throw new ArgumentException($"targets must be (N) = ({hidden.shape[0]}) int64, got [{string.Join(", ", targets.shape)}] {targets.dtype}");
        if (hidden.dtype != weight.dtype) throw new ArgumentException($"hidden is {hidden.dtype}, weight {weight.dtype}: cast both to the matmul dtype");
        if (!(divisor > 0)) throw new ArgumentOutOfRangeException(nameof(divisor), "must be positive");
        bool kernel = useKernel ?? LinearCrossEntropy.UsesKernel(hidden);
        if (kernel && !LinearCrossEntropy.UsesKernel(hidden)) throw new ArgumentException("the CPU kernels do not cover these operands");
        if (kernel)
        {
            var entropy = new StrongBox<Tensor?>();
            var logProbs = Function.apply(hidden, weight, targets, divisor, withEntropy ? entropy : null!, stats ?? new TokenLossStats());
            return (logProbs, entropy.Value);
        }
        using var scope = NewDisposeScope();
        var (lp, h) = FromLogits(torch.mm(hidden, weight.t()), targets, divisor, withEntropy, stats);
        return (lp.MoveToOuterDisposeScope(), h?.MoveToOuterDisposeScope());
    }

    /// <summary>The libtorch ops: <see cref="Compute"/> from logits (N, V) in any dtype.</summary>
    public static (Tensor LogProbs, Tensor? Entropy) FromLogits(Tensor logits, Tensor targets, double divisor, bool withEntropy, TokenLossStats? stats = null)
    {
        using var scope = NewDisposeScope();
        using var ignore = LinearCrossEntropy.IgnoreIndex.ToScalar();
        var valid = targets.ne(ignore);
        if (stats is not null) Count(logits, targets, stats);
        var scaled = logits.to(ScalarType.Float32).div(divisor);
        var all = F.log_softmax(scaled, -1);
        var picked = all.gather(1, targets.masked_fill(valid.logical_not(), 0).unsqueeze(1)).squeeze(1).mul(valid.to(ScalarType.Float32));
        Tensor? h = null;
        if (withEntropy)
            using (torch.no_grad())
                h = (scaled.logsumexp(-1) - (scaled.softmax(-1) * scaled).sum(-1)).MoveToOuterDisposeScope();
        return (picked.MoveToOuterDisposeScope(), h);
    }

    /// <summary>Writes log_softmax(logits / <paramref name="divisor"/>)[token] of each row of <paramref name="logits"/> (B, V) fp32
    /// on the CPU, into column <paramref name="column"/> of <paramref name="into"/> (B, S) fp32 contiguous, 0 for rows
    /// not <paramref name="active"/>: a sampling loop's log-probabilities in one row pass on this thread (the generator's
    /// fused-decode path, where libtorch runs single-threaded and its five ops per step cost ~20 ms per rollout).</summary>
    internal static unsafe void SampledTokens(Tensor logits, long[] tokens, IReadOnlyList<bool> active, double divisor, Tensor into, long column)
    {
        if (logits.dtype != ScalarType.Float32 || logits.ndim != 2 || logits.device_type != DeviceType.CPU)
            throw new ArgumentException("logits must be (B, V) fp32 on the CPU");
        using var copy = logits.is_contiguous() ? null : logits.contiguous();
        logits = copy ?? logits;
        long b = logits.shape[0], v = logits.shape[1];
        if (tokens.Length != b || active.Count != b || into.shape[0] != b || into.dtype != ScalarType.Float32 || !into.is_contiguous())
            throw new ArgumentException($"tokens, active rows and the output must have the logits' {b} rows");
        var targets = new long[b];
        for (int r = 0; r < b; r++) targets[r] = active[r] ? tokens[r] : LinearCrossEntropy.IgnoreIndex;
        var values = new float[b];
        // Pooled: called every decode step, and a vocabulary above ~21k ids would put a fresh row buffer on the large object heap each time.
        var scratch = System.Buffers.ArrayPool<float>.Shared.Rent((int)v);
        long correct = 0, labelled = 0;
        try
        {
            fixed (long* t = targets)
            fixed (float* lp = values, s = scratch)
                CpuKernels.TokenLogProbRows((byte*)NativeTensors.Data(logits, ScalarType.Float32), bf16: false, (int)v, t, LinearCrossEntropy.IgnoreIndex,
                    (float)divisor, 0, (int)b, lp, null, keepProbabilities: false, s, ref correct, ref labelled);
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(scratch); }
        var output = (float*)NativeTensors.Data(into, ScalarType.Float32);
        long stride = into.shape[1];
        for (int r = 0; r < b; r++) output[r * stride + column] = values[r];
    }

    /// <summary>Adds to <paramref name="stats"/> the labelled rows of logits (N, V) and those whose argmax is the target.</summary>
    internal static void Count(Tensor logits, Tensor targets, TokenLossStats stats)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        using var ignore = LinearCrossEntropy.IgnoreIndex.ToScalar();
        var valid = targets.ne(ignore);
        stats.Correct += logits.argmax(-1).eq(targets).logical_and(valid).sum().item<long>();
        stats.Labelled += valid.sum().item<long>();
    }

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "LinearLogProbs";

        public override unsafe Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var hidden = (Tensor)vars[0];
            var weight = (Tensor)vars[1];
            var targets = ((Tensor)vars[2]).to(ScalarType.Int64).cpu().contiguous();
            float divisor = (float)(double)vars[3];
            var entropyOut = vars[4] as StrongBox<Tensor?>;
            var stats = (TokenLossStats)vars[5];
            long n = hidden.shape[0], v = weight.shape[0];
            bool bf16 = hidden.dtype == ScalarType.BFloat16;
            using var noGrad = torch.no_grad();
            var logits = torch.mm(hidden, weight.t()).contiguous();                             // (N, V) matmul dtype
            var logProbs = torch.empty([n], dtype: ScalarType.Float32);
            var entropy = entropyOut is null ? null : torch.empty([n], dtype: ScalarType.Float32);
            bool gradHidden = hidden.requires_grad, gradWeight = weight.requires_grad, grads = gradHidden || gradWeight;
            var data = (byte*)NativeTensors.Data(logits, logits.dtype);
            var targetData = (long*)NativeTensors.Data(targets, ScalarType.Int64);
            var lp = (float*)NativeTensors.Data(logProbs, ScalarType.Float32);
            var h = entropy is null ? null : (float*)NativeTensors.Data(entropy, ScalarType.Float32);
            int threads = torch.get_num_threads();
            var counts = new long[2 * threads];
            WorkerTeam.ForRanges((int)n, threads, (r0, r1, part) =>
            {
                var scratch = new float[v];
                long correct = 0, labelled = 0;
                fixed (float* s = scratch)
                    CpuKernels.TokenLogProbRows(data, bf16, (int)v, targetData, LinearCrossEntropy.IgnoreIndex, divisor, r0, r1, lp, h, grads, s,
                        ref correct, ref labelled);
                counts[2 * part] = correct;
                counts[2 * part + 1] = labelled;
            });
            for (int part = 0; part < threads; part++)
            {
                stats.Correct += counts[2 * part];
                stats.Labelled += counts[2 * part + 1];
            }
            if (entropyOut is not null) entropyOut.Value = entropy;
            // The logits buffer now holds the probabilities the backward needs.
            if (grads) ctx.save_for_backward([logits, targets, hidden, weight]);
            else
            {
                logits.Dispose();
                targets.Dispose();
            }
            ctx.save_data("divisor", divisor);
            ctx.save_data("hidden", gradHidden);
            ctx.save_data("weight", gradWeight);
            return logProbs;
        }

        public override unsafe List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (probabilities, targets, hidden, weight) = (saved[0], saved[1], saved[2], saved[3]);
            float divisor = (float)ctx.get_data("divisor");
            bool gradHidden = (bool)ctx.get_data("hidden"), gradWeight = (bool)ctx.get_data("weight");
            using var noGrad = torch.no_grad();
            using var g = gradOutput.to(ScalarType.Float32).cpu().contiguous();
            long n = probabilities.shape[0], v = probabilities.shape[1];
            // In place over the kept probabilities: the graph is not run backward twice (no retain_graph here).
            var gradLogits = probabilities;
            var data = (byte*)NativeTensors.Data(gradLogits, gradLogits.dtype);
            var targetData = (long*)NativeTensors.Data(targets, ScalarType.Int64);
            var gradData = (float*)NativeTensors.Data(g, ScalarType.Float32);
            bool bf16 = gradLogits.dtype == ScalarType.BFloat16;
            WorkerTeam.ForRanges((int)n, torch.get_num_threads(), (r0, r1, _) =>
                CpuKernels.TokenLogProbBackwardRows(data, bf16, (int)v, targetData, LinearCrossEntropy.IgnoreIndex, divisor, gradData, r0, r1));
            var hiddenGrad = gradHidden ? torch.mm(gradLogits, weight) : null;
            var weightGrad = gradWeight ? torch.mm(gradLogits.t(), hidden) : null;
            return [hiddenGrad!, weightGrad!, null!, null!, null!, null!];
        }
    }
}
