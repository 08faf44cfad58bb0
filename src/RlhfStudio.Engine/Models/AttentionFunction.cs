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
        return MaskFits(mask, b, t);
    }

    /// <summary>Whether <see cref="ApplyPacked"/> takes <paramref name="qkv"/> (B, T, nh + 2 kvh, hs) contiguous, with
    /// rotary tables (B or 1, T, hs) fp32 contiguous and <paramref name="mask"/> as <see cref="Covers"/> (hs also a
    /// multiple of 32: the rotation pairs vectors half a head apart).</summary>
    public static bool CoversPacked(Tensor qkv, int heads, int kvHeads, Tensor cos, Tensor sinSigned, Tensor? mask)
    {
        if (!CpuKernels.IsSupported || qkv.device_type != DeviceType.CPU || qkv.ndim != 4 || !qkv.is_contiguous()) return false;
        if (qkv.dtype is not (ScalarType.Float32 or ScalarType.BFloat16)) return false;
        long b = qkv.shape[0], t = qkv.shape[1], hs = qkv.shape[3];
        if (kvHeads < 1 || heads % kvHeads != 0 || qkv.shape[2] != heads + 2 * kvHeads) return false;
        if (t < 1 || t > MaxTokens || hs % (2 * CpuKernels.Lanes) != 0) return false;
        foreach (var table in new[] { cos, sinSigned })
            if (table.device_type != DeviceType.CPU || table.dtype != ScalarType.Float32 || table.ndim != 3 || !table.is_contiguous() ||
                (table.shape[0] != 1 && table.shape[0] != b) || table.shape[1] != t || table.shape[2] != hs) return false;
        return cos.shape[0] == sinSigned.shape[0] && MaskFits(mask, b, t);
    }

    private static bool MaskFits(Tensor? mask, long b, long t) =>
        mask is null || (mask.device_type == DeviceType.CPU && mask.dtype == ScalarType.Bool && mask.ndim == 4 &&
                         (mask.shape[0] == 1 || mask.shape[0] == b) && mask.shape[1] == 1 && mask.shape[2] == t && mask.shape[3] == t);

    /// <summary>softmax(q k^T / sqrt(hs) + mask) v, returned as (B, T, nh, hs) contiguous: causal when
    /// <paramref name="isCausal"/> (key j visible to query i when j &lt;= i, SDPA's top-left alignment), else where
    /// <paramref name="mask"/> is true, else everywhere. Every query must see at least one key (AttentionInputs.Build
    /// opens the rows of pad queries).</summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, Tensor? mask, bool isCausal)
    {
        var (kernelMask, causal) = KernelPattern(mask, isCausal);
        return Function.apply(q, k, v, kernelMask!, causal);
    }

    /// <summary>As <see cref="Apply"/> on the projection output <paramref name="qkv"/> (B, T, nh + 2 kvh, hs): heads
    /// [0, nh) are the queries, then kvh keys and kvh values; q and k are rotated by the rotary tables
    /// (<see cref="RotaryTables"/>' cos and signed sin in fp32, (B or 1, T, hs)) inside the kernels, and the gradient
    /// is one (B, T, nh + 2 kvh, hs) tensor: no rotary ops, slices or their backwards around the kernels.</summary>
    public static Tensor ApplyPacked(Tensor qkv, int heads, int kvHeads, Tensor cos, Tensor sinSigned, Tensor? mask, bool isCausal)
    {
        var (kernelMask, causal) = KernelPattern(mask, isCausal);
        return PackedFunction.apply(qkv, cos, sinSigned, kernelMask!, causal, heads, kvHeads);
    }

    /// <summary>The mask and causal flag the kernels run with: no mask under plain causal attention; a mask that hides
    /// every key after its query (AttentionInputs.Build's padded masks) runs with the causal flag too, so the kernels
    /// compute only the lower triangle and apply the mask within it; any other mask runs over the full square.</summary>
    private static (Tensor? Mask, bool Causal) KernelPattern(Tensor? mask, bool isCausal)
    {
        if (mask is null || isCausal) return (null, isCausal);
        var contiguous = mask.contiguous();
        return (contiguous, WithinCausal(contiguous));
    }

    /// <summary>Whether a contiguous bool mask (B or 1, 1, T, T) is false everywhere above its diagonal.</summary>
    private static bool WithinCausal(Tensor mask)
    {
        long t = mask.shape[3], matrices = mask.shape[0];
        var data = (byte*)NativeTensors.Data(mask, ScalarType.Bool);
        for (long m = 0; m < matrices; m++)
            for (long i = 0; i < t - 1; i++)
            {
                var above = new ReadOnlySpan<byte>(data + (m * t + i) * t + i + 1, (int)(t - i - 1));
                if (above.ContainsAnyExcept((byte)0)) return false;
            }
        return true;
    }

    private static HeadsView View(Tensor x) =>
        new(NativeTensors.StridedData(x, x.dtype), x.dtype == ScalarType.BFloat16, x.stride(0), x.stride(1), x.stride(2));

    /// <summary>(B, heads, T, hs) view of a contiguous (B, T, heads, hs) buffer.</summary>
    private static HeadsView TokenMajor(Tensor x) =>
        new(NativeTensors.Data(x, x.dtype), x.dtype == ScalarType.BFloat16, x.stride(0), x.stride(2), x.stride(1));

    /// <summary>(B, count, T, hs) view of heads [first, first + count) of a contiguous (B, T, H, hs) buffer.</summary>
    private static HeadsView Heads(Tensor x, int first)
    {
        long hs = x.shape[3];
        var data = (byte*)NativeTensors.Data(x, x.dtype) + first * hs * x.element_size();
        return new(data, x.dtype == ScalarType.BFloat16, x.stride(0), x.stride(2), x.stride(1));
    }

    private static RopeView Rope(Tensor? cos, Tensor? sinSigned) =>
        cos is null ? default : new((float*)NativeTensors.Data(cos, ScalarType.Float32), (float*)NativeTensors.Data(sinSigned!, ScalarType.Float32),
            cos.shape[0] == 1 ? 0 : cos.shape[1] * cos.shape[2]);

    /// <summary>Shapes of one call: b sequences of t tokens, heads query heads over kvHeads, hs wide.</summary>
    private readonly record struct Shape(int B, int Heads, int KvHeads, int T, int Hs);

    /// <summary>The mask's bytes (null without one) and the stride between sequences (0 when one mask serves all).</summary>
    private static (IntPtr Data, long Stride) MaskOf(Tensor? mask, Shape s) =>
        mask is null ? (IntPtr.Zero, 0) : ((IntPtr)NativeTensors.Data(mask, ScalarType.Bool), mask.shape[0] == 1 ? 0 : (long)s.T * s.T);

    /// <summary>The forward kernels over every (sequence, query head); y (B, T, nh, hs) and, when wanted, lse (B, nh, T).</summary>
    private static void RunForward(in HeadsView q, in HeadsView k, in HeadsView v, RopeView rope, Shape s, Tensor? mask, bool causal, Tensor y, Tensor? lse)
    {
        var (qv, kv, vv, yv) = (q, k, v, TokenMajor(y));
        float* lseData = lse is null ? null : (float*)NativeTensors.Data(lse, ScalarType.Float32);
        var (maskData, maskStride) = MaskOf(mask, s);
        long scratchFloats = CpuKernels.AttentionScratchFloats(s.T, s.Hs);
        WorkerTeam.ForRanges(s.B * s.Heads, torch.get_num_threads(), (w0, w1, _) =>
            CpuKernels.AttentionForward(qv, kv, vv, rope, s.Heads, s.Heads / s.KvHeads, s.T, s.Hs, causal, (byte*)maskData, maskStride, yv, lseData, w0, w1,
                CpuKernels.ThreadScratch(scratchFloats)));
    }

    /// <summary>The backward kernels over every (sequence, kv head), writing dq, dk, dv through their views.</summary>
    private static void RunBackward(in HeadsView q, in HeadsView k, in HeadsView v, RopeView rope, Shape s, Tensor? mask, bool causal, Tensor dy,
        Tensor lse, in HeadsView dq, in HeadsView dk, in HeadsView dv)
    {
        var (qv, kv, vv, dyv, dqv, dkv, dvv) = (q, k, v, TokenMajor(dy), dq, dk, dv);
        float* lseData = (float*)NativeTensors.Data(lse, ScalarType.Float32);
        var (maskData, maskStride) = MaskOf(mask, s);
        long scratchFloats = CpuKernels.AttentionScratchFloats(s.T, s.Hs);
        WorkerTeam.ForRanges(s.B * s.KvHeads, torch.get_num_threads(), (w0, w1, _) =>
            CpuKernels.AttentionBackward(qv, kv, vv, rope, dyv, lseData, s.Heads, s.Heads / s.KvHeads, s.T, s.Hs, causal, (byte*)maskData, maskStride,
                dqv, dkv, dvv, w0, w1, CpuKernels.ThreadScratch(scratchFloats)));
    }

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "CausalAttention";

        public override unsafe Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (q, k, v, mask) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor);
            bool causal = (bool)vars[4];
            var s = new Shape((int)q.shape[0], (int)q.shape[1], (int)k.shape[1], (int)q.shape[2], (int)q.shape[3]);
            bool grads = q.requires_grad || k.requires_grad || v.requires_grad;
            using var noGrad = torch.no_grad();
            var y = torch.empty([s.B, s.T, s.Heads, s.Hs], dtype: q.dtype);
            var lse = grads ? torch.empty([s.B, s.Heads, s.T], dtype: ScalarType.Float32) : null;
            RunForward(View(q), View(k), View(v), default, s, mask, causal, y, lse);
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
            var s = new Shape((int)q.shape[0], (int)q.shape[1], (int)k.shape[1], (int)q.shape[2], (int)q.shape[3]);
            using var noGrad = torch.no_grad();
            using var dy = gradOutput.to(q.dtype).contiguous();                                    // (B, T, nh, hs)
            var dq = torch.empty([s.B, s.T, s.Heads, s.Hs], dtype: q.dtype);
            var dk = torch.empty([s.B, s.T, s.KvHeads, s.Hs], dtype: q.dtype);
            var dv = torch.empty([s.B, s.T, s.KvHeads, s.Hs], dtype: q.dtype);
            RunBackward(View(q), View(k), View(v), default, s, mask, causal, dy, lse, TokenMajor(dq), TokenMajor(dk), TokenMajor(dv));
            return [dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), null!, null!];
        }
    }

    private sealed class PackedFunction : autograd.SingleTensorFunction<PackedFunction>
    {
        public override string Name => "PackedRotaryAttention";

        public override unsafe Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (qkv, cos, sin, mask) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor);
            bool causal = (bool)vars[4];
            int heads = (int)vars[5], kvHeads = (int)vars[6];
            var s = new Shape((int)qkv.shape[0], heads, kvHeads, (int)qkv.shape[1], (int)qkv.shape[3]);
            bool grads = qkv.requires_grad;
            using var noGrad = torch.no_grad();
            var y = torch.empty([s.B, s.T, s.Heads, s.Hs], dtype: qkv.dtype);
            var lse = grads ? torch.empty([s.B, s.Heads, s.T], dtype: ScalarType.Float32) : null;
            RunForward(Heads(qkv, 0), Heads(qkv, heads), Heads(qkv, heads + kvHeads), Rope(cos, sin), s, mask, causal, y, lse);
            if (grads)
            {
                ctx.save_for_backward([qkv, cos, sin, lse!, mask ?? lse!]);
                ctx.save_data("masked", mask is not null);
                ctx.save_data("causal", causal);
                ctx.save_data("heads", heads);
                ctx.save_data("kvHeads", kvHeads);
            }
            return y;
        }

        public override unsafe List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (qkv, cos, sin, lse) = (saved[0], saved[1], saved[2], saved[3]);
            var mask = (bool)ctx.get_data("masked") ? saved[4] : null;
            bool causal = (bool)ctx.get_data("causal");
            int heads = (int)ctx.get_data("heads"), kvHeads = (int)ctx.get_data("kvHeads");
            var s = new Shape((int)qkv.shape[0], heads, kvHeads, (int)qkv.shape[1], (int)qkv.shape[3]);
            using var noGrad = torch.no_grad();
            using var dy = gradOutput.to(qkv.dtype).contiguous();                                  // (B, T, nh, hs)
            var dqkv = torch.empty(qkv.shape, dtype: qkv.dtype);                                      // every element written
            RunBackward(Heads(qkv, 0), Heads(qkv, heads), Heads(qkv, heads + kvHeads), Rope(cos, sin), s, mask, causal, dy, lse,
                Heads(dqkv, 0), Heads(dqkv, heads), Heads(dqkv, heads + kvHeads));
            return [dqkv, null!, null!, null!, null!, null!, null!];
        }
    }
}
