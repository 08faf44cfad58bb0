// Row kernels for training and scoring forwards: each replaces a chain of libtorch elementwise ops over a large
// tensor (one pass over memory each) by one pass that keeps a row in cache. Single-threaded on purpose: they run
// between libtorch matmuls whose OpenMP worker keeps spinning on the other core for a few milliseconds afterwards.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RlhfStudio.Engine.Runtime;

internal static unsafe partial class CpuKernels
{
    /// <summary>Token cross-entropy of rows [r0, r1) of logits (rows of <paramref name="vocab"/>, fp32 or bf16) at
    /// <paramref name="targets"/> (<paramref name="ignoreIndex"/> = no loss), as F.cross_entropy on the fp32 values:
    /// returns the summed loss, counts labelled rows whose first maximal logit is the target, and, with
    /// <paramref name="writeGradient"/>, overwrites each row in place with d(summed loss)/d(logits) = softmax - one-hot
    /// (zero for ignored rows), rounded to the row's dtype. <paramref name="scratch"/>: vocab floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static double CrossEntropyRows(byte* logits, bool bf16, int vocab, long* targets, long ignoreIndex, int r0, int r1, bool writeGradient,
        float* scratch, ref long correct, ref long labelled)
    {
        double loss = 0;
        int elementBytes = bf16 ? 2 : 4;
        int full = vocab / Lanes * Lanes;
        for (int r = r0; r < r1; r++)
        {
            byte* row = logits + (long)r * vocab * elementBytes;
            long target = targets[r];
            bool valid = target != ignoreIndex;
            if (valid && (target < 0 || target >= vocab)) throw new ArgumentException($"target {target} is outside the vocabulary (0..{vocab - 1})");
            // fp32 copy of the row and its maximum.
            var maxVector = Vector512.Create(float.NegativeInfinity);
            int i = 0;
            for (; i < full; i += Lanes)
            {
                var x = bf16 ? Bf16.Load(row, i) : F32.Load(row, i);
                x.Store(scratch + i);
                maxVector = Vector512.Max(maxVector, x);
            }
            float max = HorizontalMax(maxVector);
            for (; i < vocab; i++)
            {
                scratch[i] = bf16 ? Bf16.At(row, i) : F32.At(row, i);
                max = MathF.Max(max, scratch[i]);
            }
            if (!valid && !writeGradient) continue;
            float sum = Exp(scratch, vocab, max);   // scratch now holds exp(x - max)
            if (valid)
            {
                labelled++;
                float picked = bf16 ? Bf16.At(row, (int)target) : F32.At(row, (int)target);
                loss += max + Math.Log(sum) - picked;
                // argmax = the first index holding the maximum, as torch's.
                if (picked == max && FirstIndexOf(row, bf16, vocab, max) == target) correct++;
            }
            if (!writeGradient) continue;
            if (!valid)
            {
                new Span<byte>(row, vocab * elementBytes).Clear();
                continue;
            }
            var inv = Vector512.Create(1f / sum);
            i = 0;
            if (bf16)
            {
                for (; i < full; i += Lanes) StoreBf16(Vector512.Load(scratch + i) * inv, (ushort*)row + i);
                for (; i < vocab; i++) ((ushort*)row)[i] = ToBf16(scratch[i] / sum);
                ((ushort*)row)[target] = ToBf16(scratch[target] / sum - 1f);
            }
            else
            {
                for (; i < full; i += Lanes) (Vector512.Load(scratch + i) * inv).Store((float*)row + i);
                for (; i < vocab; i++) ((float*)row)[i] = scratch[i] / sum;
                ((float*)row)[target] = scratch[target] / sum - 1f;
            }
        }
        return loss;
    }

    private static float HorizontalMax(Vector512<float> v)
    {
        var a = Vector256.Max(v.GetLower(), v.GetUpper());
        var b = Vector128.Max(a.GetLower(), a.GetUpper());
        float m = b[0];
        for (int i = 1; i < 4; i++) m = MathF.Max(m, b[i]);
        return m;
    }

    private static int FirstIndexOf(byte* row, bool bf16, int n, float value)
    {
        for (int i = 0; i < n; i++)
            if ((bf16 ? Bf16.At(row, i) : F32.At(row, i)) == value) return i;
        return -1;
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
