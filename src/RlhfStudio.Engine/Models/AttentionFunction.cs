// Attention over whole sequences on a CPU as one kernel each way (CpuKernels.AttentionForward/Backward): reads q, k, v
// in place from the projections' output (strided views, no contiguous copies, kv heads shared by their query group
// without repeat_kv), computes only the causal triangle, keeps the (T, T) scores of one head in cache in fp32, and
// saves only a log-sum-exp per query row for the backward (recomputing the probabilities, as flash attention does).
using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

internal static unsafe class AttentionFunction
{
    /// <summary>Longest sequence the kernels take: a thread keeps three (T, T) fp32 matrices (12 MB at 1,024).</summary>
    public const long MaxTokens = 1024;

    /// <summary>Whether the kernels take q (B, nh, T, hs) over k, v (B, kvh, T, hs) (no cache: as many keys as queries)
    /// with <paramref name="mask"/> null or bool (B or 1, 1, T, T): CPU tensors of one dtype, fp32 or bf16, hs a
    /// multiple of 16, nh a multiple of kvh, each last dimension contiguous.</summary>
    public static bool Covers(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        if (!CpuKernels.IsSupported || q.device_type != DeviceType.CPU || q.ndim != 4 || k.ndim != 4 || v.ndim != 4) return false;
        if (q.dtype is not (ScalarType.Float32 or ScalarType.BFloat16) || k.dtype != q.dtype || v.dtype != q.dtype) return false;
        if (k.device_type != DeviceType.CPU || v.device_type != DeviceType.CPU) return false;
        long b = q.shape[0], nh = q.shape[1], t = q.shape[2], hs = q.shape[3], kvh = k.shape[1];
        if (t < 1 || t > MaxTokens || hs % CpuKernels.Lanes != 0 || kvh < 1 || nh % kvh != 0) return false;
        if (!k.shape.SequenceEqual(new[] { b, kvh, t, hs }) || !v.shape.SequenceEqual(k.shape)) return false;
        if (q.stride(3) != 1 || k.stride(3) != 1 || v.stride(3) != 1) return false;
        if (mask is not null && (mask.device_type != DeviceType.CPU || mask.dtype != ScalarType.Bool || mask.ndim != 4 ||
                                 (mask.shape[0] != 1 && mask.shape[0] != b) || mask.shape[1] != 1 || mask.shape[2] != t || mask.shape[3] != t)) return false;
        return true;
    }

    /// <summary>softmax(q k^T / sqrt(hs) + mask) v, returned as (B, T, nh, hs) contiguous: causal when
    /// <paramref name="isCausal"/> (key j visible to query i when j &lt;= i, SDPA's top-left alignment), else where
    /// <paramref name="mask"/> is true, else everywhere. Every query must see at least one key (AttentionInputs.Build
    /// opens the rows of pad queries).</summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, Tensor? mask, bool isCausal) =>
        Function.apply(q, k, v, (mask is null || isCausal ? null : mask.contiguous())!, isCausal);

    private static HeadsView View(Tensor x) =>
        new(NativeTensors.StridedData(x, x.dtype), x.dtype == ScalarType.BFloat16, x.stride(0), x.stride(1), x.stride(2));

    /// <summary>(B, heads, T, hs) view of a contiguous (B, T, heads, hs) buffer.</summary>
    private static HeadsView TokenMajor(Tensor x) =>
        new(NativeTensors.Data(x, x.dtype), x.dtype == ScalarType.BFloat16, x.stride(0), x.stride(2), x.stride(1));

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "CausalAttention";

        public override unsafe Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (q, k, v, mask) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor);
            bool causal = (bool)vars[4];
            int b = (int)q.shape[0], heads = (int)q.shape[1], t = (int)q.shape[2], hs = (int)q.shape[3], kvHeads = (int)k.shape[1];
            bool grads = q.requires_grad || k.requires_grad || v.requires_grad;
            using var noGrad = torch.no_grad();
            var y = torch.empty([b, t, heads, hs], dtype: q.dtype);
            var lse = grads ? torch.empty([b, heads, t], dtype: ScalarType.Float32) : null;
            var (qv, kv, vv, yv) = (View(q), View(k), View(v), TokenMajor(y));
            float* lseData = lse is null ? null : (float*)NativeTensors.Data(lse, ScalarType.Float32);
            byte* maskData = mask is null ? null : (byte*)NativeTensors.Data(mask, ScalarType.Bool);
            long maskStride = mask is null || mask.shape[0] == 1 ? 0 : (long)t * t;
            long scratchFloats = CpuKernels.AttentionScratchFloats(t, hs);
            WorkerTeam.ForRanges(b * heads, torch.get_num_threads(), (w0, w1, _) =>
            {
                CpuKernels.AttentionForward(qv, kv, vv, heads, heads / kvHeads, t, hs, causal, maskData, maskStride, yv, lseData, w0, w1,
                    CpuKernels.ThreadScratch(scratchFloats));
            });
            if (grads)
            {
                // The mask goes into the saved tensors (kept alive by the graph, not by a dispose scope); lse stands in without one.
                ctx.save_for_backward([q, k, v, lse!, mask ?? lse!]);
                ctx.save_data("masked", mask is not null);
                ctx.save_data("causal", causal);
            }
            return y;
        }

        public override unsafe List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (q, k, v, lse) = (saved[0], saved[1], saved[2], saved[3]);
            var mask = (bool)ctx.get_data("masked") ? saved[4] : null;
            bool causal = (bool)ctx.get_data("causal");
            int b = (int)q.shape[0], heads = (int)q.shape[1], t = (int)q.shape[2], hs = (int)q.shape[3], kvHeads = (int)k.shape[1];
            using var noGrad = torch.no_grad();
            using var dy = gradOutput.to(q.dtype).contiguous();                                    // (B, T, nh, hs)
            var dq = torch.empty([b, t, heads, hs], dtype: q.dtype);
            var dk = torch.empty([b, t, kvHeads, hs], dtype: q.dtype);
            var dv = torch.empty([b, t, kvHeads, hs], dtype: q.dtype);
            var (qv, kv, vv, dyv) = (View(q), View(k), View(v), TokenMajor(dy));
            var (dqv, dkv, dvv) = (TokenMajor(dq), TokenMajor(dk), TokenMajor(dv));
            float* lseData = (float*)NativeTensors.Data(lse, ScalarType.Float32);
            byte* maskData = mask is null ? null : (byte*)NativeTensors.Data(mask, ScalarType.Bool);
            long maskStride = mask is null || mask.shape[0] == 1 ? 0 : (long)t * t;
            long scratchFloats = CpuKernels.AttentionScratchFloats(t, hs);
            WorkerTeam.ForRanges(b * kvHeads, torch.get_num_threads(), (w0, w1, _) =>
            {
                CpuKernels.AttentionBackward(qv, kv, vv, dyv, lseData, heads, heads / kvHeads, t, hs, causal, maskData, maskStride, dqv, dkv, dvv,
                    w0, w1, CpuKernels.ThreadScratch(scratchFloats));
            });
            return [dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), null!, null!];
        }
    }
}
