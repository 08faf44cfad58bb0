// SIMD kernels for what libtorch does slowly on a CPU at our sizes. Decode (CpuDecoder): every op of a Llama layer on a handful of rows, with
// fp32 activations and fp32 or bf16 weights read in place from the tensors libtorch holds. At decode sizes (8 rows)
// libtorch spends more time dispatching ~180 small ops per step than computing; these kernels have no per-call cost
// beyond a function call, and the matmul below runs at 100-155 GFLOP/s per core on bf16 weights (measured on this
// machine's AVX-512 cores, 8 rows, K = 256..1376), bandwidth-bound on the weights as a decode matmul should be.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RlhfStudio.Engine.Runtime;

/// <summary>A weight matrix [Rows, Cols] (nn.Linear layout, row-major) in place in a tensor's memory, fp32 or bf16.</summary>
internal readonly unsafe struct WeightMatrix(void* data, int rows, int cols, bool bf16, float* bias)
{
    public readonly byte* Data = (byte*)data;
    public readonly int Rows = rows, Cols = cols;
    public readonly bool Bf16 = bf16;
    /// <summary>[Rows] fp32, or null.</summary>
    public readonly float* Bias = bias;
}

internal static unsafe partial class CpuKernels
{
    /// <summary>The kernels need 512-bit vectors with AVX-512F (x86-64-v4); elsewhere decoding stays on libtorch.</summary>
    public static bool IsSupported => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    /// <summary>Width of every vector loop: dimensions passed to these kernels are multiples of it.</summary>
    public const int Lanes = 16;

    private interface IRows
    {
        static abstract int Bytes { get; }
        static abstract Vector512<float> Load(byte* row, int k);
        static abstract float At(byte* row, int k);
    }

    private readonly struct F32 : IRows
    {
        public static int Bytes => 4;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* row, int k) => Vector512.Load((float*)row + k);
        public static float At(byte* row, int k) => ((float*)row)[k];
    }

    private readonly struct Bf16 : IRows
    {
        public static int Bytes => 2;
        // bf16 -> fp32 is exact: the 16 bits become the high half of the fp32 word.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* row, int k) =>
            Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)row + k)), 16).AsSingle();
        public static float At(byte* row, int k) => BitConverter.UInt32BitsToSingle((uint)((ushort*)row)[k] << 16);
    }

    /// <summary>y[b, n] = x[b, :] . w[n, :] + bias[n] (or y += that with <paramref name="accumulate"/>) for the weight rows
    /// n in [<paramref name="n0"/>, <paramref name="n1"/>) and the <paramref name="batch"/> rows of x (row stride
    /// w.Cols); y has row stride <paramref name="ldy"/>. w.Cols must be a multiple of <see cref="Lanes"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MatMul(in WeightMatrix w, float* x, int batch, int n0, int n1, float* y, int ldy, bool accumulate)
    {
        if (w.Bf16) MatMul<Bf16>(w, x, batch, n0, n1, y, ldy, accumulate);
        else MatMul<F32>(w, x, batch, n0, n1, y, ldy, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MatMul<TW>(in WeightMatrix w, float* x, int batch, int n0, int n1, float* y, int ldy, bool accumulate) where TW : IRows
    {
        int k = w.Cols;
        long rowBytes = (long)k * TW.Bytes;
        int n = n0;
        for (; n + 4 <= n1; n += 4)
        {
            byte* w0 = w.Data + n * rowBytes;
            int b = 0;
            // The first pass over these 4 rows also prefetches the next 4 (the decode matmuls stream their weights from
            // memory: without it, 6 GB/s of bf16 weights per core; the hardware prefetcher loses 4 short interleaved rows).
            byte* next = n + 8 <= n1 ? w0 + 4 * rowBytes : null;
            for (; b + 4 <= batch; b += 4, next = null) Tile4x4<TW>(w0, rowBytes, x + (long)b * k, k, y + (long)b * ldy + n, ldy, w.Bias == null ? null : w.Bias + n, accumulate, next);
            for (; b < batch; b++) Tile4x1<TW>(w0, rowBytes, x + (long)b * k, k, y + (long)b * ldy + n, w.Bias == null ? null : w.Bias + n, accumulate);
        }
        for (; n < n1; n++)
            for (int b = 0; b < batch; b++)
            {
                byte* row = w.Data + n * rowBytes;
                float* xb = x + (long)b * k;
                var acc = Vector512<float>.Zero;
                for (int i = 0; i < k; i += Lanes) acc = Vector512.FusedMultiplyAdd(TW.Load(row, i), Vector512.Load(xb + i), acc);
                Store(y + (long)b * ldy + n, Vector512.Sum(acc) + (w.Bias == null ? 0 : w.Bias[n]), accumulate);
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* y, float value, bool accumulate) => *y = accumulate ? *y + value : value;

    // 4 weight rows x 4 activation rows: 16 accumulators, 8 loads per 16 FMAs.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x4<TW>(byte* w0, long rowBytes, float* x0, int k, float* y, int ldy, float* bias, bool accumulate, byte* prefetch) where TW : IRows
    {
        // Spread over the loop: the next tile's 4 rows (contiguous, 4 x rowBytes) at the pace this one is read.
        long prefetchStep = prefetch == null ? 0 : 64, prefetchEnd = 4 * rowBytes;
        long prefetchAt = 0;
        int prefetchPerIteration = (int)((4 * rowBytes + (k / Lanes) * 64 - 1) / ((k / Lanes) * 64)) + 1;
        byte* w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        float* x1 = x0 + k, x2 = x1 + k, x3 = x2 + k;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default,
            a10 = default, a11 = default, a12 = default, a13 = default,
            a20 = default, a21 = default, a22 = default, a23 = default,
            a30 = default, a31 = default, a32 = default, a33 = default;
        for (int i = 0; i < k; i += Lanes)
        {
            if (prefetchStep != 0)
                for (int p = 0; p < prefetchPerIteration && prefetchAt < prefetchEnd; p++, prefetchAt += prefetchStep) Sse.Prefetch0(prefetch + prefetchAt);
            var v0 = Vector512.Load(x0 + i);
            var v1 = Vector512.Load(x1 + i);
            var v2 = Vector512.Load(x2 + i);
            var v3 = Vector512.Load(x3 + i);
            var q = TW.Load(w0, i);
            a00 = Vector512.FusedMultiplyAdd(q, v0, a00); a01 = Vector512.FusedMultiplyAdd(q, v1, a01);
            a02 = Vector512.FusedMultiplyAdd(q, v2, a02); a03 = Vector512.FusedMultiplyAdd(q, v3, a03);
            q = TW.Load(w1, i);
            a10 = Vector512.FusedMultiplyAdd(q, v0, a10); a11 = Vector512.FusedMultiplyAdd(q, v1, a11);
            a12 = Vector512.FusedMultiplyAdd(q, v2, a12); a13 = Vector512.FusedMultiplyAdd(q, v3, a13);
            q = TW.Load(w2, i);
            a20 = Vector512.FusedMultiplyAdd(q, v0, a20); a21 = Vector512.FusedMultiplyAdd(q, v1, a21);
            a22 = Vector512.FusedMultiplyAdd(q, v2, a22); a23 = Vector512.FusedMultiplyAdd(q, v3, a23);
            q = TW.Load(w3, i);
            a30 = Vector512.FusedMultiplyAdd(q, v0, a30); a31 = Vector512.FusedMultiplyAdd(q, v1, a31);
            a32 = Vector512.FusedMultiplyAdd(q, v2, a32); a33 = Vector512.FusedMultiplyAdd(q, v3, a33);
        }
        float c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        if (bias != null) (c0, c1, c2, c3) = (bias[0], bias[1], bias[2], bias[3]);
        Row4(y, Vector512.Sum(a00) + c0, Vector512.Sum(a10) + c1, Vector512.Sum(a20) + c2, Vector512.Sum(a30) + c3, accumulate);
        Row4(y + ldy, Vector512.Sum(a01) + c0, Vector512.Sum(a11) + c1, Vector512.Sum(a21) + c2, Vector512.Sum(a31) + c3, accumulate);
        Row4(y + 2 * ldy, Vector512.Sum(a02) + c0, Vector512.Sum(a12) + c1, Vector512.Sum(a22) + c2, Vector512.Sum(a32) + c3, accumulate);
        Row4(y + 3 * ldy, Vector512.Sum(a03) + c0, Vector512.Sum(a13) + c1, Vector512.Sum(a23) + c2, Vector512.Sum(a33) + c3, accumulate);
    }

    // 4 weight rows x 1 activation row (batch remainders and batches below 4).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x1<TW>(byte* w0, long rowBytes, float* x0, int k, float* y, float* bias, bool accumulate) where TW : IRows
    {
        byte* w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int i = 0; i < k; i += Lanes)
        {
            var v = Vector512.Load(x0 + i);
            a0 = Vector512.FusedMultiplyAdd(TW.Load(w0, i), v, a0);
            a1 = Vector512.FusedMultiplyAdd(TW.Load(w1, i), v, a1);
            a2 = Vector512.FusedMultiplyAdd(TW.Load(w2, i), v, a2);
            a3 = Vector512.FusedMultiplyAdd(TW.Load(w3, i), v, a3);
        }
        float c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        if (bias != null) (c0, c1, c2, c3) = (bias[0], bias[1], bias[2], bias[3]);
        Row4(y, Vector512.Sum(a0) + c0, Vector512.Sum(a1) + c1, Vector512.Sum(a2) + c2, Vector512.Sum(a3) + c3, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row4(float* y, float v0, float v1, float v2, float v3, bool accumulate)
    {
        if (accumulate)
        {
            y[0] += v0; y[1] += v1; y[2] += v2; y[3] += v3;
        }
        else
        {
            y[0] = v0; y[1] = v1; y[2] = v2; y[3] = v3;
        }
    }

    /// <summary>Row <paramref name="row"/> of an embedding matrix [V, n] (fp32 or bf16) into <paramref name="y"/> as fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void EmbeddingRow(void* table, bool bf16, long row, int n, float* y)
    {
        if (bf16)
        {
            byte* r = (byte*)table + row * n * 2;
            for (int i = 0; i < n; i += Lanes) Bf16.Load(r, i).Store(y + i);
        }
        else
        {
            Buffer.MemoryCopy((float*)table + row * n, y, n * sizeof(float), n * sizeof(float));
        }
    }

    /// <summary>transformers' RMSNorm of each of <paramref name="rows"/> rows of x (length n): x / sqrt(mean(x^2) + eps) * weight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, int rows, int n, float* weight, float eps, float* y)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * n, yr = y + (long)r * n;
            var ss = Vector512<float>.Zero;
            for (int i = 0; i < n; i += Lanes)
            {
                var v = Vector512.Load(xr + i);
                ss = Vector512.FusedMultiplyAdd(v, v, ss);
            }
            var scale = Vector512.Create(1f / MathF.Sqrt(Vector512.Sum(ss) / n + eps));
            for (int i = 0; i < n; i += Lanes)
                (Vector512.Load(weight + i) * (Vector512.Load(xr + i) * scale)).Store(yr + i);
        }
    }

    /// <summary>Rotary embedding in place on <paramref name="heads"/> consecutive head vectors of length hs:
    /// v * cos + roll(v, hs/2) * sinSigned, the tables' row for this position (see RotaryTables).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rotate(float* v, int heads, int hs, float* cos, float* sinSigned)
    {
        int half = hs / 2;
        float* rolled = stackalloc float[hs];
        for (int h = 0; h < heads; h++, v += hs)
        {
            for (int i = 0; i < hs; i++) rolled[i] = v[i < half ? i + half : i - half];
            for (int i = 0; i < hs; i++) v[i] = v[i] * cos[i] + rolled[i] * sinSigned[i];
        }
    }

    /// <summary>Writes <paramref name="hs"/> fp32 values as row <paramref name="row"/> of a cache (rows of hs, fp32 or bf16;
    /// bf16 rounded to nearest even, as torch's conversion).</summary>
    public static void StoreRow(float* source, byte* cache, bool bf16, long row, int hs)
    {
        if (!bf16)
        {
            Buffer.MemoryCopy(source, (float*)cache + row * hs, hs * sizeof(float), hs * sizeof(float));
            return;
        }
        ushort* target = (ushort*)cache + row * hs;
        for (int i = 0; i < hs; i++) target[i] = ToBf16(source[i]);
    }

    /// <summary>fp32 -> bf16, round to nearest even; NaN stays NaN.</summary>
    public static ushort ToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    /// <summary>Attention of one query head q (hs) over cache rows [head + first, head + last] (keys and values: rows of
    /// hs, fp32 or bf16): softmax(q.k * scale) . v into <paramref name="output"/>. <paramref name="scores"/> holds
    /// last + 1 floats.</summary>
    public static void Attend(float* q, byte* keys, byte* values, bool bf16, long head, int first, int last, int hs, float scale, float* scores, float* output)
    {
        if (bf16) Attend<Bf16>(q, keys, values, head, first, last, hs, scale, scores, output);
        else Attend<F32>(q, keys, values, head, first, last, hs, scale, scores, output);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Attend<TKV>(float* q, byte* keys, byte* values, long head, int first, int last, int hs, float scale, float* scores, float* output) where TKV : IRows
    {
        long rowBytes = (long)hs * TKV.Bytes;
        byte* k0 = keys + head * rowBytes, v0 = values + head * rowBytes;
        float max = float.NegativeInfinity;
        for (int j = first; j <= last; j++)
        {
            byte* kj = k0 + j * rowBytes;
            var acc = Vector512<float>.Zero;
            for (int i = 0; i < hs; i += Lanes) acc = Vector512.FusedMultiplyAdd(Vector512.Load(q + i), TKV.Load(kj, i), acc);
            float s = Vector512.Sum(acc) * scale;
            scores[j] = s;
            if (s > max) max = s;
        }
        float inv = 1f / Exp(scores + first, last - first + 1, max);
        if (hs == 64)
        {
            // The common head size: the four output vectors stay in registers over all positions.
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int j = first; j <= last; j++)
            {
                var p = Vector512.Create(scores[j]);
                byte* vj = v0 + j * rowBytes;
                a0 = Vector512.FusedMultiplyAdd(p, TKV.Load(vj, 0), a0);
                a1 = Vector512.FusedMultiplyAdd(p, TKV.Load(vj, 16), a1);
                a2 = Vector512.FusedMultiplyAdd(p, TKV.Load(vj, 32), a2);
                a3 = Vector512.FusedMultiplyAdd(p, TKV.Load(vj, 48), a3);
            }
            (a0 * inv).Store(output);
            (a1 * inv).Store(output + 16);
            (a2 * inv).Store(output + 32);
            (a3 * inv).Store(output + 48);
            return;
        }
        for (int i = 0; i < hs; i += Lanes)
        {
            var acc = Vector512<float>.Zero;
            for (int j = first; j <= last; j++) acc = Vector512.FusedMultiplyAdd(Vector512.Create(scores[j]), TKV.Load(v0 + j * rowBytes, i), acc);
            (acc * inv).Store(output + i);
        }
    }

    /// <summary>One part of a row's log-sum-exp of x / divisor over columns [c0, c1): their maximum m of x / divisor and
    /// sum of exp(x / divisor - m) (m = -inf and 0 for an empty range). Parts combine as M = max m, S = sum s e^(m - M),
    /// log-sum-exp = M + log S.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static (float Max, float Sum) ScaledExpSum(float* x, int c0, int c1, float divisor)
    {
        float max = ScaledMax(x, c0, c1, divisor, null);
        if (float.IsNegativeInfinity(max)) return (max, 0f);
        var divide = Vector512.Create(divisor);
        var shift = Vector512.Create(max);
        var total = Vector512<float>.Zero;
        int i;
        for (i = c0; i + Lanes <= c1; i += Lanes) total += Exp(Vector512.Load(x + i) / divide - shift);
        float sum = Vector512.Sum(total);
        for (; i < c1; i++) sum += MathF.Exp(x[i] / divisor - max);
        return (max, sum);
    }

    /// <summary>One draw from softmax(x / <paramref name="temperature"/>) over x[0, v) by inverting the cumulative
    /// distribution with <paramref name="uniform"/> in [0, 1), as Sampling.Draw: the first index whose cumulative weight
    /// reaches (1 - uniform) x the total, so a zero-weight entry (a -inf logit) is never chosen. Weights are summed per
    /// 16 (the same float sums in both passes) and accumulated in double. -1 when the row has no finite maximum (NaN or
    /// all -inf). <paramref name="scratch"/> holds v floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int SampleRow(float* x, int v, float temperature, float uniform, float* scratch)
    {
        float max = ScaledMax(x, 0, v, temperature, scratch);
        if (!float.IsFinite(max)) return -1;
        int full = v / Lanes * Lanes, i;
        var shift = Vector512.Create(max);
        double total = 0;
        for (i = 0; i < full; i += Lanes)
        {
            var e = Exp(Vector512.Load(scratch + i) - shift);
            e.Store(scratch + i);
            total += Vector512.Sum(e);
        }
        for (; i < v; i++)
        {
            scratch[i] = MathF.Exp(scratch[i] - max);
            total += scratch[i];
        }
        double target = (1.0 - uniform) * total, cumulative = 0;
        for (i = 0; i < full; i += Lanes)
        {
            double block = Vector512.Sum(Vector512.Load(scratch + i));
            if (cumulative + block < target)
            {
                cumulative += block;
                continue;
            }
            for (int j = i; j < i + Lanes; j++)
            {
                cumulative += scratch[j];
                if (cumulative >= target && scratch[j] > 0) return j;
            }
        }
        for (; i < v; i++)
        {
            cumulative += scratch[i];
            if (cumulative >= target && scratch[i] > 0) return i;
        }
        // Rounding left the target just above the last cumulative value: the last entry with weight (the maximum has 1).
        for (i = v - 1; i > 0 && scratch[i] == 0; i--) { }
        return i;
    }

    /// <summary>The maximum of x[i] / <paramref name="divisor"/> over [c0, c1), each quotient also stored to
    /// <paramref name="into"/>[i] when it is not null.</summary>
    private static float ScaledMax(float* x, int c0, int c1, float divisor, float* into)
    {
        bool scale = divisor != 1f;
        var divide = Vector512.Create(divisor);
        var maxVector = Vector512.Create(float.NegativeInfinity);
        int i = c0;
        for (; i + Lanes <= c1; i += Lanes)
        {
            var q = scale ? Vector512.Load(x + i) / divide : Vector512.Load(x + i);
            if (into != null) q.Store(into + i);
            maxVector = Vector512.Max(maxVector, q);
        }
        float max = HorizontalMax(maxVector);
        for (; i < c1; i++)
        {
            float q = scale ? x[i] / divisor : x[i];
            if (into != null) into[i] = q;
            max = MathF.Max(max, q);
        }
        return max;
    }

    /// <summary>v[i] = exp(v[i] - shift) in place; returns the sum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Exp(float* v, int n, float shift)
    {
        var s = Vector512.Create(shift);
        var total = Vector512<float>.Zero;
        int i = 0;
        for (; i + Lanes <= n; i += Lanes)
        {
            var e = Exp(Vector512.Load(v + i) - s);
            e.Store(v + i);
            total += e;
        }
        float sum = Vector512.Sum(total);
        for (; i < n; i++)
        {
            v[i] = MathF.Exp(v[i] - shift);
            sum += v[i];
        }
        return sum;
    }

    /// <summary>y[i] = silu(gate[i]) * up[i] = gate / (1 + exp(-gate)) * up for i in [0, n), n a multiple of <see cref="Lanes"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SiluTimes(float* gate, float* up, int n, float* y)
    {
        for (int i = 0; i < n; i += Lanes)
        {
            var g = Vector512.Load(gate + i);
            (g / (Vector512<float>.One + Exp(-g)) * Vector512.Load(up + i)).Store(y + i);
        }
    }
}
