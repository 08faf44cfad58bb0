// Row kernels for training and scoring forwards: each replaces a chain of libtorch elementwise ops over a large
// tensor (one pass over memory each) by one pass that keeps a row in cache. Callers split the rows over a WorkerTeam.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RlhfStudio.Engine.Runtime;

internal static unsafe partial class CpuKernels
{
    /// <summary>Token log-probabilities of rows [r0, r1) of logits (rows of <paramref name="vocab"/>, fp32 or bf16) divided
    /// by <paramref name="divisor"/>, as log_softmax(logits.float() / divisor) gathered at <paramref name="targets"/>:
    /// writes each row's log-probability (0 where the target is <paramref name="ignoreIndex"/>) and, when
    /// <paramref name="entropy"/> is given, the entropy of its distribution; counts labelled rows and those whose first
    /// maximal logit is the target. With <paramref name="keepProbabilities"/> each row is overwritten in place with its
    /// probabilities softmax(logits / divisor) (in the row's dtype) for <see cref="TokenLogProbBackwardRows"/>: one
    /// exponential per element for forward and backward. <paramref name="scratch"/>: vocab floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TokenLogProbRows(byte* logits, bool bf16, int vocab, long* targets, long ignoreIndex, float divisor, int r0, int r1,
        float* logProbs, float* entropy, bool keepProbabilities, float* scratch, ref long correct, ref long labelled)
    {
        int elementBytes = bf16 ? 2 : 4;
        int full = vocab / Lanes * Lanes;
        var divide = Vector512.Create(divisor);
        for (int r = r0; r < r1; r++)
        {
            byte* row = logits + (long)r * vocab * elementBytes;
            long target = targets[r];
            bool valid = target != ignoreIndex;
            if (valid && (target < 0 || target >= vocab)) throw new ArgumentException($"target {target} is outside the vocabulary (0..{vocab - 1})");
            // The scaled row in fp32 and its maximum.
            var maxVector = Vector512.Create(float.NegativeInfinity);
            int i = 0;
            for (; i < full; i += Lanes)
            {
                var x = (bf16 ? Bf16.Load(row, i) : F32.Load(row, i)) / divide;
                x.Store(scratch + i);
                maxVector = Vector512.Max(maxVector, x);
            }
            float max = HorizontalMax(maxVector);
            for (; i < vocab; i++)
            {
                scratch[i] = (bf16 ? Bf16.At(row, i) : F32.At(row, i)) / divisor;
                max = MathF.Max(max, scratch[i]);
            }
            float picked = valid ? scratch[target] : 0f;
            if (valid)
            {
                labelled++;
                // argmax = the first index holding the maximum, as torch's (a positive divisor keeps the order).
                if (picked == max && FirstIndexOfMax(scratch, vocab) == target) correct++;
            }
            // scratch -> e^(x - max), with sum_j e_j and (for the entropy) sum_j e_j x_j.
            var shift = Vector512.Create(max);
            var sumVector = Vector512<float>.Zero;
            var weightedVector = Vector512<float>.Zero;
            for (i = 0; i < full; i += Lanes)
            {
                var x = Vector512.Load(scratch + i);
                var e = Exp(x - shift);
                e.Store(scratch + i);
                sumVector += e;
                if (entropy != null) weightedVector = Vector512.FusedMultiplyAdd(e, x, weightedVector);
            }
            float total = Vector512.Sum(sumVector), weighted = Vector512.Sum(weightedVector);
            for (; i < vocab; i++)
            {
                float x = scratch[i], e = MathF.Exp(x - max);
                scratch[i] = e;
                total += e;
                weighted += e * x;
            }
            float lse = max + MathF.Log(total);
            logProbs[r] = valid ? picked - lse : 0f;
            if (entropy != null) entropy[r] = lse - weighted / total;
            if (!keepProbabilities) continue;
            var inverse = Vector512.Create(1f / total);
            for (i = 0; i < full; i += Lanes)
            {
                var p = Vector512.Load(scratch + i) * inverse;
                if (bf16) StoreBf16(p, (ushort*)row + i);
                else p.Store((float*)row + i);
            }
            for (; i < vocab; i++)
            {
                float p = scratch[i] / total;
                if (bf16) ((ushort*)row)[i] = ToBf16(p);
                else ((float*)row)[i] = p;
            }
        }
    }

    /// <summary>Backward of <see cref="TokenLogProbRows"/>: d(sum_r g_r logProb_r) / d logits = g_r (one-hot - p) / divisor
    /// for rows [r0, r1) (0 for ignored rows), from the probabilities the forward kept, in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TokenLogProbBackwardRows(byte* probabilities, bool bf16, int vocab, long* targets, long ignoreIndex, float divisor,
        float* gradOutput, int r0, int r1)
    {
        int elementBytes = bf16 ? 2 : 4;
        int full = vocab / Lanes * Lanes;
        for (int r = r0; r < r1; r++)
        {
            byte* row = probabilities + (long)r * vocab * elementBytes;
            long target = targets[r];
            if (target == ignoreIndex || gradOutput[r] == 0)
            {
                new Span<byte>(row, vocab * elementBytes).Clear();
                continue;
            }
            float factor = -gradOutput[r] / divisor;
            float targetGradient = gradOutput[r] / divisor * (1f - (bf16 ? Bf16.At(row, (int)target) : F32.At(row, (int)target)));
            var scale = Vector512.Create(factor);
            int i = 0;
            for (; i < full; i += Lanes)
            {
                if (bf16) StoreBf16(Bf16.Load(row, i) * scale, (ushort*)row + i);
                else (F32.Load(row, i) * scale).Store((float*)row + i);
            }
            for (; i < vocab; i++)
            {
                if (bf16) ((ushort*)row)[i] = ToBf16(Bf16.At(row, i) * factor);
                else ((float*)row)[i] *= factor;
            }
            if (bf16) ((ushort*)row)[target] = ToBf16(targetGradient);
            else ((float*)row)[target] = targetGradient;
        }
    }

    private static float HorizontalMax(Vector512<float> v)
    {
        var a = Vector256.Max(v.GetLower(), v.GetUpper());
        var b = Vector128.Max(a.GetLower(), a.GetUpper());
        float m = b[0];
        for (int i = 1; i < 4; i++) m = MathF.Max(m, b[i]);
        return m;
    }

    private static int FirstIndexOfMax(float* row, int n)
    {
        int best = 0;
        float max = float.NegativeInfinity;
        for (int i = 0; i < n; i++)
            if (row[i] > max) (max, best) = (row[i], i);
        return best;
    }

    /// <summary>16 fp32 values to bf16, round to nearest even (NaN not preserved: callers guard against NaN losses).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBf16(Vector512<float> values, ushort* target)
    {
        Avx512F.ConvertToVector256UInt16(RoundBf16(values).AsUInt32() >> 16).Store(target);
    }
}

internal static unsafe partial class CpuKernels
{
    /// <summary>transformers' RMSNorm over rows [r0, r1) of x (rows of n; fp32, or bf16 with <paramref name="bf16"/>): r =
    /// 1 / sqrt(mean(x^2) + eps) in fp32 (kept per row for the backward), y = weight * round(x * r), rounded to x's dtype:
    /// what x.float(), the variance, rsqrt, .to(x.dtype) and the weight product compute with an fp32 weight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNormRows(byte* x, bool bf16, int n, float* weight, float eps, int r0, int r1, float* inverseRms, byte* y)
    {
        int elementBytes = bf16 ? 2 : 4;
        for (int r = r0; r < r1; r++)
        {
            byte* xr = x + (long)r * n * elementBytes, yr = y + (long)r * n * elementBytes;
            var ss = Vector512<float>.Zero;
            for (int i = 0; i < n; i += Lanes)
            {
                var v = bf16 ? Bf16.Load(xr, i) : F32.Load(xr, i);
                ss = Vector512.FusedMultiplyAdd(v, v, ss);
            }
            float inv = 1f / MathF.Sqrt(Vector512.Sum(ss) / n + eps);
            inverseRms[r] = inv;
            var scale = Vector512.Create(inv);
            for (int i = 0; i < n; i += Lanes)
            {
                if (bf16) StoreBf16(Vector512.Load(weight + i) * RoundBf16((Bf16.Load(xr, i) * scale)), (ushort*)yr + i);
                else (Vector512.Load(weight + i) * (F32.Load(xr, i) * scale)).Store((float*)yr + i);
            }
        }
    }

    /// <summary>Backward of <see cref="RmsNormRows"/> for rows [r0, r1): with g = round(dy * weight) (to x's dtype, as the
    /// product's backward gives it), dx = r g - x r^3 mean(g x), rounded to x's dtype; adds sum over the rows of
    /// dy * round(x r) into <paramref name="weightGrad"/> (n floats).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNormBackwardRows(byte* x, byte* dy, bool bf16, int n, float* weight, float* inverseRms, int r0, int r1, byte* dx, float* weightGrad)
    {
        int elementBytes = bf16 ? 2 : 4;
        for (int r = r0; r < r1; r++)
        {
            long offset = (long)r * n * elementBytes;
            byte* xr = x + offset, gr = dy + offset, outr = dx + offset;
            float inv = inverseRms[r];
            var scale = Vector512.Create(inv);
            var dotVector = Vector512<float>.Zero;
            for (int i = 0; i < n; i += Lanes)
            {
                var xv = bf16 ? Bf16.Load(xr, i) : F32.Load(xr, i);
                var gy = bf16 ? Bf16.Load(gr, i) : F32.Load(gr, i);
                var g = Vector512.Load(weight + i) * gy;
                if (bf16) g = RoundBf16(g);
                dotVector = Vector512.FusedMultiplyAdd(g, xv, dotVector);
                var h = xv * scale;
                if (bf16) h = RoundBf16(h);
                Vector512.FusedMultiplyAdd(gy, h, Vector512.Load(weightGrad + i)).Store(weightGrad + i);
            }
            var coefficient = Vector512.Create(inv * inv * inv * Vector512.Sum(dotVector) / n);
            for (int i = 0; i < n; i += Lanes)
            {
                var xv = bf16 ? Bf16.Load(xr, i) : F32.Load(xr, i);
                var g = Vector512.Load(weight + i) * (bf16 ? Bf16.Load(gr, i) : F32.Load(gr, i));
                if (bf16) g = RoundBf16(g);
                var d = g * scale - xv * coefficient;
                if (bf16) StoreBf16(d, (ushort*)outr + i);
                else d.Store((float*)outr + i);
            }
        }
    }

    /// <summary>fp32 values rounded to the nearest bf16 (as fp32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> RoundBf16(Vector512<float> values)
    {
        var bits = values.AsUInt32();
        var rounded = (bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One)) & Vector512.Create(0xFFFF0000u);
        return rounded.AsSingle();
    }
}

internal static unsafe partial class CpuKernels
{
    /// <summary>The SwiGLU product of rows [r0, r1) of <paramref name="gateUp"/> (rows of 2 x <paramref name="inter"/>:
    /// the gate then the up projection, fp32 or bf16): h = silu(gate) * up = gate * sigmoid(gate) * up, computed in fp32
    /// and rounded once to the rows' dtype, into <paramref name="h"/> (rows of inter). inter: a multiple of 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SwiGluRows(byte* gateUp, bool bf16, int inter, int r0, int r1, byte* h)
    {
        int size = bf16 ? 2 : 4;
        for (int r = r0; r < r1; r++)
        {
            byte* row = gateUp + (long)r * 2 * inter * size, up = row + (long)inter * size, target = h + (long)r * inter * size;
            for (int i = 0; i < inter; i += Lanes)
            {
                var g = bf16 ? Bf16.Load(row, i) : F32.Load(row, i);
                var u = bf16 ? Bf16.Load(up, i) : F32.Load(up, i);
                var y = g / (Vector512<float>.One + Exp(-g)) * u;
                if (bf16) StoreBf16(y, (ushort*)target + i);
                else y.Store((float*)target + i);
            }
        }
    }

    /// <summary>Backward of <see cref="SwiGluRows"/>: from dh (rows of inter) writes d(gateUp) (rows of 2 x inter):
    /// d gate = dh * up * sigmoid(g) (1 + g (1 - sigmoid(g))), d up = dh * silu(g), in fp32, rounded once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SwiGluBackwardRows(byte* gateUp, byte* dh, bool bf16, int inter, int r0, int r1, byte* dGateUp)
    {
        int size = bf16 ? 2 : 4;
        var one = Vector512<float>.One;
        for (int r = r0; r < r1; r++)
        {
            long offset = (long)r * 2 * inter * size;
            byte* row = gateUp + offset, up = row + (long)inter * size, dRow = dGateUp + offset, dUp = dRow + (long)inter * size;
            byte* gradient = dh + (long)r * inter * size;
            for (int i = 0; i < inter; i += Lanes)
            {
                var g = bf16 ? Bf16.Load(row, i) : F32.Load(row, i);
                var u = bf16 ? Bf16.Load(up, i) : F32.Load(up, i);
                var d = bf16 ? Bf16.Load(gradient, i) : F32.Load(gradient, i);
                var s = one / (one + Exp(-g));
                var dGate = d * u * s * Vector512.FusedMultiplyAdd(g, one - s, one);
                var dU = d * g * s;
                if (bf16)
                {
                    StoreBf16(dGate, (ushort*)dRow + i);
                    StoreBf16(dU, (ushort*)dUp + i);
                }
                else
                {
                    dGate.Store((float*)dRow + i);
                    dU.Store((float*)dUp + i);
                }
            }
        }
    }
}
