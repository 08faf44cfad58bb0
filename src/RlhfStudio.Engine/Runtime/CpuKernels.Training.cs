// Row kernels for training and scoring forwards: each replaces a chain of libtorch elementwise ops over a large
// tensor (one pass over memory each) by one pass that keeps a row in cache. Single-threaded on purpose: they run
// between libtorch matmuls whose OpenMP worker keeps spinning on the other core for a few milliseconds afterwards.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RlhfStudio.Engine.Runtime;

internal static unsafe partial class CpuKernels
{
    /// <summary>Token log-probabilities of rows [r0, r1) of logits (rows of <paramref name="vocab"/>, fp32 or bf16) divided
    /// by <paramref name="divisor"/>, as log_softmax(logits.float() / divisor) gathered at <paramref name="targets"/>:
    /// writes each row's log-probability (0 where the target is <paramref name="ignoreIndex"/>), its logsumexp (for the
    /// backward) and, when <paramref name="entropy"/> is given, the entropy of its distribution; counts labelled rows and
    /// those whose first maximal logit is the target. <paramref name="scratch"/>: vocab floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TokenLogProbRows(byte* logits, bool bf16, int vocab, long* targets, long ignoreIndex, float divisor, int r0, int r1,
        float* logProbs, float* logSumExp, float* entropy, float* scratch, ref long correct, ref long labelled)
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
            // The scaled row in fp32 and its maximum; the raw maximum for the argmax test.
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
            float weighted = 0;
            if (entropy != null)
            {
                // sum_j e^(x_j - max) x_j, accumulated while the exponentials are made: H = lse - sum_j p_j x_j.
                var sumVector = Vector512<float>.Zero;
                var weightedVector = Vector512<float>.Zero;
                var shift = Vector512.Create(max);
                for (i = 0; i < full; i += Lanes)
                {
                    var x = Vector512.Load(scratch + i);
                    var e = Vector512.Exp(x - shift);
                    sumVector += e;
                    weightedVector = Vector512.FusedMultiplyAdd(e, x, weightedVector);
                }
                float total = Vector512.Sum(sumVector);
                weighted = Vector512.Sum(weightedVector);
                for (; i < vocab; i++)
                {
                    float e = MathF.Exp(scratch[i] - max);
                    total += e;
                    weighted += e * scratch[i];
                }
                float lse = max + MathF.Log(total);
                logSumExp[r] = lse;
                entropy[r] = lse - weighted / total;
            }
            else logSumExp[r] = max + MathF.Log(Exp(scratch, vocab, max));
            logProbs[r] = valid ? picked - logSumExp[r] : 0f;
            if (!valid) continue;
            labelled++;
            // argmax = the first index holding the maximum, as torch's (division by a positive divisor keeps the order).
            if (picked == max && FirstIndexOfMax(row, bf16, vocab) == target) correct++;
        }
    }

    /// <summary>Backward of <see cref="TokenLogProbRows"/>: d(sum_r g_r logProb_r) / d logits = g_r (one-hot - softmax) /
    /// divisor for rows [r0, r1) (0 for ignored rows), from the logits and their saved logsumexp, written to
    /// <paramref name="gradLogits"/> in the logits' dtype (rounded to nearest even); it may be the logits buffer itself.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TokenLogProbBackwardRows(byte* logits, bool bf16, int vocab, long* targets, long ignoreIndex, float divisor, float* logSumExp,
        float* gradOutput, int r0, int r1, byte* gradLogits)
    {
        int elementBytes = bf16 ? 2 : 4;
        int full = vocab / Lanes * Lanes;
        var divide = Vector512.Create(divisor);
        for (int r = r0; r < r1; r++)
        {
            long offset = (long)r * vocab * elementBytes;
            byte* row = logits + offset, output = gradLogits + offset;
            long target = targets[r];
            if (target == ignoreIndex || gradOutput[r] == 0)
            {
                new Span<byte>(output, vocab * elementBytes).Clear();
                continue;
            }
            float g = gradOutput[r];
            // d/dx_j of g * (x_t / d - lse) = g / d * (1[j = t] - p_j), p_j = exp(x_j / d - lse).
            var lse = Vector512.Create(logSumExp[r]);
            var scale = Vector512.Create(-g / divisor);
            float targetGradient = g / divisor * (1f - MathF.Exp((bf16 ? Bf16.At(row, (int)target) : F32.At(row, (int)target)) / divisor - logSumExp[r]));
            int i = 0;
            for (; i < full; i += Lanes)
            {
                var gradient = Vector512.Exp((bf16 ? Bf16.Load(row, i) : F32.Load(row, i)) / divide - lse) * scale;
                if (bf16) StoreBf16(gradient, (ushort*)output + i);
                else gradient.Store((float*)output + i);
            }
            for (; i < vocab; i++)
            {
                float gradient = -g / divisor * MathF.Exp((bf16 ? Bf16.At(row, i) : F32.At(row, i)) / divisor - logSumExp[r]);
                if (bf16) ((ushort*)output)[i] = ToBf16(gradient);
                else ((float*)output)[i] = gradient;
            }
            if (bf16) ((ushort*)output)[target] = ToBf16(targetGradient);
            else ((float*)output)[target] = targetGradient;
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

    private static int FirstIndexOfMax(byte* row, bool bf16, int n)
    {
        int best = 0;
        float max = float.NegativeInfinity;
        for (int i = 0; i < n; i++)
        {
            float x = bf16 ? Bf16.At(row, i) : F32.At(row, i);
            if (x > max) (max, best) = (x, i);
        }
        return best;
    }

    /// <summary>16 fp32 values to bf16, round to nearest even (NaN not preserved: callers guard against NaN losses).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBf16(Vector512<float> values, ushort* target)
    {
        var bits = values.AsUInt32();
        var rounded = (bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One)) >> 16;
        Avx512F.ConvertToVector256UInt16(rounded).Store(target);
    }
}
