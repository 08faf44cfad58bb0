// Attention over whole sequences (training forwards and backwards, scoring forwards) as one kernel per (sequence, head):
// scores, softmax, the value product and, backward, every gradient, in fp32 on matrices that stay in cache, with causal
// attention computing only the lower triangle. It replaces transformers' eager attention (two bf16 batched matmuls
// over the full square, a fp32 cast, scale, mask fill, softmax and cast back, each a pass over a (B, nh, T, T) tensor,
// plus the contiguous copies of transposed q, k, v and their backwards).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RlhfStudio.Engine.Runtime;

/// <summary>A (B, heads, T, hs) tensor in place: element (b, h, t, d) at Data + b*SB + h*SH + t*ST + d elements
/// (d contiguous), fp32 or bf16.</summary>
internal readonly unsafe struct HeadsView(void* data, bool bf16, long sb, long sh, long st)
{
    public readonly byte* Data = (byte*)data;
    public readonly bool Bf16 = bf16;
    public readonly long SB = sb, SH = sh, ST = st;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Row(int b, int h, int t) => Data + (b * SB + h * SH + t * ST) * (Bf16 ? 2 : 4);
}

/// <summary>Rotary tables applied inside the attention kernels: cos and signed sin (see RotaryTables) fp32, hs per
/// position, position t of sequence b at b * BatchStride + t * hs (BatchStride 0 when the sequences share positions).
/// A null Cos means no rotary: q and k are used as they are.</summary>
internal readonly unsafe struct RopeView(float* cos, float* sinSigned, long batchStride)
{
    public readonly float* Cos = cos, SinSigned = sinSigned;
    public readonly long BatchStride = batchStride;
    public bool IsNone => Cos == null;
}

internal static unsafe partial class CpuKernels
{
    /// <summary>Which part of a product a causal pattern lets a block of rows [i0, i1) skip.</summary>
    private enum Causal
    {
        /// <summary>Every column and every k.</summary>
        None,
        /// <summary>Columns beyond the block's last row (rounded up to a vector) are skipped: scores Q K^T, dO V^T.</summary>
        Columns,
        /// <summary>k beyond the block's last row is skipped (A is lower triangular): P V, dS K.</summary>
        KEnd,
        /// <summary>k before the block's first row is skipped (A is upper triangular): P^T dO, dS^T Q.</summary>
        KStart,
    }

    /// <summary>Floats of scratch one thread needs for sequences of <paramref name="t"/> tokens and heads <paramref name="hs"/> wide.</summary>
    public static long AttentionScratchFloats(int t, int hs)
    {
        long tp = Padded(t);
        return 8L * tp * hs + 2L * tp * tp;
    }

    private static int Padded(int t) => (t + Lanes - 1) / Lanes * Lanes;

    /// <summary>Forward of softmax(q k^T / sqrt(hs) + mask) v for the (sequence, query head) items [w0, w1) of b x nh:
    /// writes y (B, T, nh, hs) and, when <paramref name="logSumExp"/> is given, each query row's log-sum-exp of its
    /// scaled scores (B, nh, T) for the backward. k and v have kvh = nh / groups heads. Either
    /// <paramref name="causal"/> (key j visible to query i when j &lt;= i) or <paramref name="mask"/> (bytes, (B or 1,
    /// T, T), nonzero = visible; <paramref name="maskBatchStride"/> 0 when shared) or neither; every query must see at
    /// least one key. <paramref name="scratch"/>: <see cref="AttentionScratchFloats"/>, 64-byte aligned.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AttentionForward(in HeadsView q, in HeadsView k, in HeadsView v, in RopeView rope, int heads, int groups, int t, int hs,
        bool causal, byte* mask, long maskBatchStride, in HeadsView y, float* logSumExp, int w0, int w1, float* scratch)
    {
        int tp = Padded(t);
        float scale = 1f / MathF.Sqrt(hs);
        float* qs = scratch, kt = qs + tp * hs, vv = kt + tp * hs, o = vv + tp * hs, p = o + tp * hs;
        var mode = causal ? Causal.Columns : Causal.None;
        for (int w = w0; w < w1; w++)
        {
            int b = w / heads, h = w % heads, kvh = h / groups;
            LoadRows(q, rope, b, h, t, tp, hs, scale, qs);
            LoadRows(k, rope, b, kvh, t, tp, hs, 1f, o);                                    // o is free until P V
            Transpose(o, tp, hs, kt);
            LoadRows(v, default, b, kvh, t, tp, hs, 1f, vv);
            Gemm(qs, hs, kt, tp, p, tp, tp, tp, hs, mode, accumulate: false);            // S = (Q / sqrt(hs)) K^T
            byte* m = mask == null ? null : mask + b * maskBatchStride;
            for (int i = 0; i < tp; i++)
            {
                float lse = SoftmaxRow(p + (long)i * tp, i, t, tp, causal, m == null ? null : m + (long)i * t);
                if (logSumExp != null && i < t) logSumExp[(long)w * t + i] = lse;
            }
            Gemm(p, tp, vv, hs, o, hs, tp, hs, t, causal ? Causal.KEnd : Causal.None, accumulate: false);   // O = P V
            for (int i = 0; i < t; i++) StoreRow(o + (long)i * hs, y.Row(b, h, i), hs, y.Bf16);
        }
    }

    /// <summary>Backward of <see cref="AttentionForward"/> for the (sequence, kv head) items [w0, w1) of b x kvh: from dy
    /// (B, nh, T, hs) and the forward's log-sum-exps, writes dq (B, nh, T, hs), dk and dv (B, kvh, T, hs), the
    /// gradients of every query head of the group summed into its kv head.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AttentionBackward(in HeadsView q, in HeadsView k, in HeadsView v, in RopeView rope, in HeadsView dy, float* logSumExp,
        int heads, int groups, int t, int hs, bool causal, byte* mask, long maskBatchStride, in HeadsView dq, in HeadsView dk, in HeadsView dv, int w0, int w1, float* scratch)
    {
        int tp = Padded(t);
        float scale = 1f / MathF.Sqrt(hs);
        long block = (long)tp * hs;
        float* qs = scratch, kk = qs + block, kt = kk + block, vt = kt + block, dO = vt + block, dQ = dO + block, dK = dQ + block, dV = dK + block;
        float* p = dV + block, ds = p + (long)tp * tp;
        int kvHeads = heads / groups;
        var columns = causal ? Causal.Columns : Causal.None;
        for (int w = w0; w < w1; w++)
        {
            int b = w / kvHeads, kvh = w % kvHeads;
            LoadRows(k, rope, b, kvh, t, tp, hs, 1f, kk);
            Transpose(kk, tp, hs, kt);
            LoadRows(v, default, b, kvh, t, tp, hs, 1f, dQ);                                // dQ is free until dS K
            Transpose(dQ, tp, hs, vt);
            new Span<float>(dK, 2 * (int)block).Clear();   // dK and dV, adjacent
            byte* m = mask == null ? null : mask + b * maskBatchStride;
            for (int h = kvh * groups; h < (kvh + 1) * groups; h++)
            {
                LoadRows(q, rope, b, h, t, tp, hs, scale, qs);
                LoadRows(dy, default, b, h, t, tp, hs, 1f, dO);
                float* lse = logSumExp + ((long)b * heads + h) * t;
                Gemm(qs, hs, kt, tp, p, tp, tp, tp, hs, columns, accumulate: false);     // S again
                Gemm(dO, hs, vt, tp, ds, tp, tp, tp, hs, columns, accumulate: false);    // dP = dO V^T
                for (int i = 0; i < tp; i++)
                    ProbabilityAndScoreGradientRow(p + (long)i * tp, ds + (long)i * tp, i, t, tp, causal, m == null ? null : m + (long)i * t, i < t ? lse[i] : 0f);
                Gemm(p, tp, dO, hs, dV, hs, tp, hs, t, causal ? Causal.KStart : Causal.None, accumulate: true, transposeA: true);    // dV += P^T dO
                Gemm(ds, tp, kk, hs, dQ, hs, tp, hs, t, causal ? Causal.KEnd : Causal.None, accumulate: false);                      // dQ = dS K (x scale below)
                Gemm(ds, tp, qs, hs, dK, hs, tp, hs, t, causal ? Causal.KStart : Causal.None, accumulate: true, transposeA: true);   // dK += dS^T (Q scale)
                var s = Vector512.Create(scale);
                for (int i = 0; i < t; i++)
                {
                    float* row = dQ + (long)i * hs;
                    for (int d = 0; d < hs; d += Lanes) (Vector512.Load(row + d) * s).Store(row + d);
                    StoreGradientRow(row, rope, b, i, dq.Row(b, h, i), hs, dq.Bf16);
                }
            }
            for (int j = 0; j < t; j++)
            {
                StoreGradientRow(dK + (long)j * hs, rope, b, j, dk.Row(b, kvh, j), hs, dk.Bf16);
                StoreRow(dV + (long)j * hs, dv.Row(b, kvh, j), hs, dv.Bf16);
            }
        }
    }

    /// <summary>Row i of the scores in place to probabilities (0 for hidden keys and padding columns); returns the
    /// log-sum-exp. Padding rows (i >= t) become zero. Whole vectors only: the columns between the last visible key and
    /// the next multiple of 16 are set to -inf first (exp gives 0 there), so no element goes through scalar code.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SoftmaxRow(float* row, int i, int t, int tp, bool causal, byte* maskRow)
    {
        if (i >= t)
        {
            new Span<float>(row, tp).Clear();
            return 0f;
        }
        int end = causal ? i + 1 : t, vectorEnd = (end + Lanes - 1) / Lanes * Lanes;
        if (maskRow != null)
            for (int j = 0; j < end; j++)
                if (maskRow[j] == 0) row[j] = float.NegativeInfinity;
        for (int j = end; j < vectorEnd; j++) row[j] = float.NegativeInfinity;
        var maxVector = Vector512.Create(float.NegativeInfinity);
        for (int j = 0; j < vectorEnd; j += Lanes) maxVector = Vector512.Max(maxVector, Vector512.Load(row + j));
        float max = HorizontalMax(maxVector);
        var shift = Vector512.Create(max);
        var sumVector = Vector512<float>.Zero;
        for (int j = 0; j < vectorEnd; j += Lanes)
        {
            var e = Exp(Vector512.Load(row + j) - shift);
            e.Store(row + j);
            sumVector += e;
        }
        float sum = Vector512.Sum(sumVector);
        var inverse = Vector512.Create(1f / sum);
        for (int j = 0; j < vectorEnd; j += Lanes) (Vector512.Load(row + j) * inverse).Store(row + j);
        new Span<float>(row + vectorEnd, tp - vectorEnd).Clear();
        return max + MathF.Log(sum);
    }

    /// <summary>Backward rows: p (scores in) to probabilities exp(s - lse), ds (dP in) to dS = P (dP - sum_j P dP), zero
    /// for hidden keys, padding columns and padding rows; whole vectors only, as <see cref="SoftmaxRow"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ProbabilityAndScoreGradientRow(float* p, float* ds, int i, int t, int tp, bool causal, byte* maskRow, float lse)
    {
        if (i >= t)
        {
            new Span<float>(p, tp).Clear();
            new Span<float>(ds, tp).Clear();
            return;
        }
        int end = causal ? i + 1 : t, vectorEnd = (end + Lanes - 1) / Lanes * Lanes;
        if (maskRow != null)
            for (int j = 0; j < end; j++)
                if (maskRow[j] == 0) p[j] = float.NegativeInfinity;
        for (int j = end; j < vectorEnd; j++)
        {
            p[j] = float.NegativeInfinity;
            ds[j] = 0f;
        }
        var shift = Vector512.Create(lse);
        var dotVector = Vector512<float>.Zero;
        for (int j = 0; j < vectorEnd; j += Lanes)
        {
            var e = Exp(Vector512.Load(p + j) - shift);
            e.Store(p + j);
            dotVector = Vector512.FusedMultiplyAdd(e, Vector512.Load(ds + j), dotVector);
        }
        var d = Vector512.Create(Vector512.Sum(dotVector));
        for (int j = 0; j < vectorEnd; j += Lanes) (Vector512.Load(p + j) * (Vector512.Load(ds + j) - d)).Store(ds + j);
        new Span<float>(p + vectorEnd, tp - vectorEnd).Clear();
        new Span<float>(ds + vectorEnd, tp - vectorEnd).Clear();
    }

    /// <summary>Rows 0..t-1 of head (b, h), rotated by <paramref name="rope"/> unless it is none, into a (tp, hs) fp32 block
    /// times <paramref name="factor"/>; padding rows zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadRows(in HeadsView x, in RopeView rope, int b, int h, int t, int tp, int hs, float factor, float* into)
    {
        var f = Vector512.Create(factor);
        for (int i = 0; i < t; i++)
        {
            byte* row = x.Row(b, h, i);
            float* target = into + (long)i * hs;
            if (!rope.IsNone) LoadRotated(row, x.Bf16, rope, b, i, hs, factor, target);
            else
                for (int d = 0; d < hs; d += Lanes) ((x.Bf16 ? Bf16.Load(row, d) : F32.Load(row, d)) * f).Store(target + d);
        }
        new Span<float>(into + (long)t * hs, (tp - t) * hs).Clear();
    }

    /// <summary>A (tp, hs) fp32 block of rows (padding rows included) transposed into (hs, tp), 16 x 16 at a time in
    /// registers: whole-vector stores, where a scalar scatter wrote hs cache lines per row.</summary>
    private static void Transpose(float* rows, int tp, int hs, float* into)
    {
        for (int j0 = 0; j0 < tp; j0 += Lanes)
            for (int d0 = 0; d0 < hs; d0 += Lanes)
                Transpose16(rows + (long)j0 * hs + d0, hs, into + (long)d0 * tp + j0, tp);
    }

    /// <summary>The 16 x 16 fp32 block at <paramref name="from"/> (rows <paramref name="fromStride"/> floats apart)
    /// stored transposed at <paramref name="to"/> (rows <paramref name="toStride"/> apart), in registers: four rounds that
    /// swap the off-diagonal sub-blocks of width 8, 4, 2, 1 between rows w apart, two two-source permutes per row pair.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose16(float* from, long fromStride, float* to, long toStride)
    {
        var r0 = Vector512.Load(from + 0 * fromStride);
        var r1 = Vector512.Load(from + 1 * fromStride);
        var r2 = Vector512.Load(from + 2 * fromStride);
        var r3 = Vector512.Load(from + 3 * fromStride);
        var r4 = Vector512.Load(from + 4 * fromStride);
        var r5 = Vector512.Load(from + 5 * fromStride);
        var r6 = Vector512.Load(from + 6 * fromStride);
        var r7 = Vector512.Load(from + 7 * fromStride);
        var r8 = Vector512.Load(from + 8 * fromStride);
        var r9 = Vector512.Load(from + 9 * fromStride);
        var r10 = Vector512.Load(from + 10 * fromStride);
        var r11 = Vector512.Load(from + 11 * fromStride);
        var r12 = Vector512.Load(from + 12 * fromStride);
        var r13 = Vector512.Load(from + 13 * fromStride);
        var r14 = Vector512.Load(from + 14 * fromStride);
        var r15 = Vector512.Load(from + 15 * fromStride);
        var low8 = TransposeTables.Low[8];
        var high8 = TransposeTables.High[8];
        (r0, r8) = (Avx512F.PermuteVar16x32x2(r0, low8, r8), Avx512F.PermuteVar16x32x2(r0, high8, r8));
        (r1, r9) = (Avx512F.PermuteVar16x32x2(r1, low8, r9), Avx512F.PermuteVar16x32x2(r1, high8, r9));
        (r2, r10) = (Avx512F.PermuteVar16x32x2(r2, low8, r10), Avx512F.PermuteVar16x32x2(r2, high8, r10));
        (r3, r11) = (Avx512F.PermuteVar16x32x2(r3, low8, r11), Avx512F.PermuteVar16x32x2(r3, high8, r11));
        (r4, r12) = (Avx512F.PermuteVar16x32x2(r4, low8, r12), Avx512F.PermuteVar16x32x2(r4, high8, r12));
        (r5, r13) = (Avx512F.PermuteVar16x32x2(r5, low8, r13), Avx512F.PermuteVar16x32x2(r5, high8, r13));
        (r6, r14) = (Avx512F.PermuteVar16x32x2(r6, low8, r14), Avx512F.PermuteVar16x32x2(r6, high8, r14));
        (r7, r15) = (Avx512F.PermuteVar16x32x2(r7, low8, r15), Avx512F.PermuteVar16x32x2(r7, high8, r15));
        var low4 = TransposeTables.Low[4];
        var high4 = TransposeTables.High[4];
        (r0, r4) = (Avx512F.PermuteVar16x32x2(r0, low4, r4), Avx512F.PermuteVar16x32x2(r0, high4, r4));
        (r1, r5) = (Avx512F.PermuteVar16x32x2(r1, low4, r5), Avx512F.PermuteVar16x32x2(r1, high4, r5));
        (r2, r6) = (Avx512F.PermuteVar16x32x2(r2, low4, r6), Avx512F.PermuteVar16x32x2(r2, high4, r6));
        (r3, r7) = (Avx512F.PermuteVar16x32x2(r3, low4, r7), Avx512F.PermuteVar16x32x2(r3, high4, r7));
        (r8, r12) = (Avx512F.PermuteVar16x32x2(r8, low4, r12), Avx512F.PermuteVar16x32x2(r8, high4, r12));
        (r9, r13) = (Avx512F.PermuteVar16x32x2(r9, low4, r13), Avx512F.PermuteVar16x32x2(r9, high4, r13));
        (r10, r14) = (Avx512F.PermuteVar16x32x2(r10, low4, r14), Avx512F.PermuteVar16x32x2(r10, high4, r14));
        (r11, r15) = (Avx512F.PermuteVar16x32x2(r11, low4, r15), Avx512F.PermuteVar16x32x2(r11, high4, r15));
        var low2 = TransposeTables.Low[2];
        var high2 = TransposeTables.High[2];
        (r0, r2) = (Avx512F.PermuteVar16x32x2(r0, low2, r2), Avx512F.PermuteVar16x32x2(r0, high2, r2));
        (r1, r3) = (Avx512F.PermuteVar16x32x2(r1, low2, r3), Avx512F.PermuteVar16x32x2(r1, high2, r3));
        (r4, r6) = (Avx512F.PermuteVar16x32x2(r4, low2, r6), Avx512F.PermuteVar16x32x2(r4, high2, r6));
        (r5, r7) = (Avx512F.PermuteVar16x32x2(r5, low2, r7), Avx512F.PermuteVar16x32x2(r5, high2, r7));
        (r8, r10) = (Avx512F.PermuteVar16x32x2(r8, low2, r10), Avx512F.PermuteVar16x32x2(r8, high2, r10));
        (r9, r11) = (Avx512F.PermuteVar16x32x2(r9, low2, r11), Avx512F.PermuteVar16x32x2(r9, high2, r11));
        (r12, r14) = (Avx512F.PermuteVar16x32x2(r12, low2, r14), Avx512F.PermuteVar16x32x2(r12, high2, r14));
        (r13, r15) = (Avx512F.PermuteVar16x32x2(r13, low2, r15), Avx512F.PermuteVar16x32x2(r13, high2, r15));
        var low1 = TransposeTables.Low[1];
        var high1 = TransposeTables.High[1];
        (r0, r1) = (Avx512F.PermuteVar16x32x2(r0, low1, r1), Avx512F.PermuteVar16x32x2(r0, high1, r1));
        (r2, r3) = (Avx512F.PermuteVar16x32x2(r2, low1, r3), Avx512F.PermuteVar16x32x2(r2, high1, r3));
        (r4, r5) = (Avx512F.PermuteVar16x32x2(r4, low1, r5), Avx512F.PermuteVar16x32x2(r4, high1, r5));
        (r6, r7) = (Avx512F.PermuteVar16x32x2(r6, low1, r7), Avx512F.PermuteVar16x32x2(r6, high1, r7));
        (r8, r9) = (Avx512F.PermuteVar16x32x2(r8, low1, r9), Avx512F.PermuteVar16x32x2(r8, high1, r9));
        (r10, r11) = (Avx512F.PermuteVar16x32x2(r10, low1, r11), Avx512F.PermuteVar16x32x2(r10, high1, r11));
        (r12, r13) = (Avx512F.PermuteVar16x32x2(r12, low1, r13), Avx512F.PermuteVar16x32x2(r12, high1, r13));
        (r14, r15) = (Avx512F.PermuteVar16x32x2(r14, low1, r15), Avx512F.PermuteVar16x32x2(r14, high1, r15));
        r0.Store(to + 0 * toStride);
        r1.Store(to + 1 * toStride);
        r2.Store(to + 2 * toStride);
        r3.Store(to + 3 * toStride);
        r4.Store(to + 4 * toStride);
        r5.Store(to + 5 * toStride);
        r6.Store(to + 6 * toStride);
        r7.Store(to + 7 * toStride);
        r8.Store(to + 8 * toStride);
        r9.Store(to + 9 * toStride);
        r10.Store(to + 10 * toStride);
        r11.Store(to + 11 * toStride);
        r12.Store(to + 12 * toStride);
        r13.Store(to + 13 * toStride);
        r14.Store(to + 14 * toStride);
        r15.Store(to + 15 * toStride);
    }

    /// <summary>Permute indices of <see cref="Transpose16"/>'s round w (at index w). Round w: row r (r &amp; w == 0) keeps its
    /// lanes i with i &amp; w == 0 and takes lanes i - w of row r + w elsewhere; row r + w gets lanes i + w of row r where
    /// i &amp; w == 0 and keeps its own elsewhere (indices 16.. name the second source). A nested class: a static
    /// constructor on CpuKernels itself would add initialisation checks to every kernel's static reads.</summary>
    private static class TransposeTables
    {
        public static readonly Vector512<int>[] Low = Build(high: false), High = Build(high: true);

        private static Vector512<int>[] Build(bool high)
        {
            var tables = new Vector512<int>[Lanes];
            for (int w = 1; w < Lanes; w *= 2)
            {
                var index = new int[Lanes];
                for (int i = 0; i < Lanes; i++)
                    index[i] = high ? ((i & w) == 0 ? i + w : Lanes + i) : ((i & w) == 0 ? i : Lanes + i - w);
                tables[w] = Vector512.Create(index);
            }
            return tables;
        }
    }

    /// <summary>factor * (x cos + roll(x, hs/2) sinSigned) of one head vector at position t of sequence b: the rotary
    /// embedding in fp32 (hs/2 a multiple of the vector width).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadRotated(byte* row, bool bf16, in RopeView rope, int b, int t, int hs, float factor, float* target)
    {
        int half = hs / 2;
        long offset = b * rope.BatchStride + (long)t * hs;
        float* cos = rope.Cos + offset, sin = rope.SinSigned + offset;
        var f = Vector512.Create(factor);
        for (int d = 0; d < hs; d += Lanes)
        {
            int partner = d < half ? d + half : d - half;
            var x = bf16 ? Bf16.Load(row, d) : F32.Load(row, d);
            var rolled = bf16 ? Bf16.Load(row, partner) : F32.Load(row, partner);
            (Vector512.FusedMultiplyAdd(x, Vector512.Load(cos + d), rolled * Vector512.Load(sin + d)) * f).Store(target + d);
        }
    }

    /// <summary>Stores the gradient of a rotated head vector (position t of sequence b) as the gradient of the vector before
    /// the rotation, g cos + roll(g sinSigned, hs/2) (the rotation's transpose), or as it is when <paramref name="rope"/>
    /// is none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreGradientRow(float* g, in RopeView rope, int b, int t, byte* target, int hs, bool bf16)
    {
        if (rope.IsNone)
        {
            StoreRow(g, target, hs, bf16);
            return;
        }
        int half = hs / 2;
        long offset = b * rope.BatchStride + (long)t * hs;
        float* cos = rope.Cos + offset, sin = rope.SinSigned + offset;
        for (int d = 0; d < hs; d += Lanes)
        {
            int partner = d < half ? d + half : d - half;
            var value = Vector512.FusedMultiplyAdd(Vector512.Load(g + d), Vector512.Load(cos + d), Vector512.Load(g + partner) * Vector512.Load(sin + partner));
            if (bf16) StoreBf16(value, (ushort*)target + d);
            else value.Store((float*)target + d);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow(float* row, byte* target, int hs, bool bf16)
    {
        for (int d = 0; d < hs; d += Lanes)
        {
            if (bf16) StoreBf16(Vector512.Load(row + d), (ushort*)target + d);
            else Vector512.Load(row + d).Store((float*)target + d);
        }
    }

    /// <summary>C (m, n) = (or +=) A (m, kn) B (kn, n), all fp32 row-major, or with <paramref name="transposeA"/> A^T B where
    /// the stored A is (kn, m) with row stride <paramref name="lda"/> (read column-wise, no transposed copy); m and n
    /// multiples of 16 (the padded blocks), kn any. <paramref name="causal"/> names the triangle of a row block it may skip.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Gemm(float* a, int lda, float* b, int ldb, float* c, int ldc, int m, int n, int kn, Causal causal, bool accumulate,
        bool transposeA = false)
    {
        // Element (row r, k) of the product's A at a + r * rowStep + k * kStep.
        long rowStep = transposeA ? 1 : lda, kStep = transposeA ? lda : 1;
        for (int i0 = 0; i0 < m; i0 += 4)
        {
            int i1 = i0 + 4;
            int nEnd = causal == Causal.Columns ? Math.Min(n, (i1 + Lanes - 1) / Lanes * Lanes) : n;
            int k0 = causal == Causal.KStart ? Math.Min(i0, kn) : 0;
            int k1 = causal == Causal.KEnd ? Math.Min(i1, kn) : kn;
            float* arow = a + i0 * rowStep, crow = c + (long)i0 * ldc;
            int j = 0;
            for (; j + 4 * Lanes <= nEnd; j += 4 * Lanes) Tile4x4(arow, rowStep, kStep, b + j, ldb, crow + j, ldc, k0, k1, accumulate);
            // The last 1-3 vectors of columns in one tile: a 4 x 1 tile loads as often as it multiplies.
            switch ((nEnd - j) / Lanes)
            {
                case 3: Tile4x3(arow, rowStep, kStep, b + j, ldb, crow + j, ldc, k0, k1, accumulate); break;
                case 2: Tile4x2(arow, rowStep, kStep, b + j, ldb, crow + j, ldc, k0, k1, accumulate); break;
                case 1: Tile4x1(arow, rowStep, kStep, b + j, ldb, crow + j, ldc, k0, k1, accumulate); break;
            }
            if (causal == Causal.Columns && nEnd < n)
                for (int r = 0; r < 4; r++) new Span<float>(crow + (long)r * ldc + nEnd, n - nEnd).Clear();
        }
    }

    // 4 rows of A x 4 vectors of B: 16 accumulators, per k 4 vector loads and 4 broadcasts for 16 FMAs.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x4(float* a, long rowStep, long kStep, float* b, int ldb, float* c, int ldc, int k0, int k1, bool accumulate)
    {
        float* a0 = a + k0 * kStep, a1 = a0 + rowStep, a2 = a1 + rowStep, a3 = a2 + rowStep;
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default,
            c10 = default, c11 = default, c12 = default, c13 = default,
            c20 = default, c21 = default, c22 = default, c23 = default,
            c30 = default, c31 = default, c32 = default, c33 = default;
        for (int kk = k0; kk < k1; kk++, a0 += kStep, a1 += kStep, a2 += kStep, a3 += kStep)
        {
            float* br = b + (long)kk * ldb;
            var b0 = Vector512.Load(br);
            var b1 = Vector512.Load(br + Lanes);
            var b2 = Vector512.Load(br + 2 * Lanes);
            var b3 = Vector512.Load(br + 3 * Lanes);
            var x = Vector512.Create(*a0);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            c02 = Vector512.FusedMultiplyAdd(x, b2, c02); c03 = Vector512.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(*a1);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            c12 = Vector512.FusedMultiplyAdd(x, b2, c12); c13 = Vector512.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(*a2);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            c22 = Vector512.FusedMultiplyAdd(x, b2, c22); c23 = Vector512.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(*a3);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            c32 = Vector512.FusedMultiplyAdd(x, b2, c32); c33 = Vector512.FusedMultiplyAdd(x, b3, c33);
        }
        Put(c, c00, accumulate); Put(c + Lanes, c01, accumulate); Put(c + 2 * Lanes, c02, accumulate); Put(c + 3 * Lanes, c03, accumulate);
        c += ldc;
        Put(c, c10, accumulate); Put(c + Lanes, c11, accumulate); Put(c + 2 * Lanes, c12, accumulate); Put(c + 3 * Lanes, c13, accumulate);
        c += ldc;
        Put(c, c20, accumulate); Put(c + Lanes, c21, accumulate); Put(c + 2 * Lanes, c22, accumulate); Put(c + 3 * Lanes, c23, accumulate);
        c += ldc;
        Put(c, c30, accumulate); Put(c + Lanes, c31, accumulate); Put(c + 2 * Lanes, c32, accumulate); Put(c + 3 * Lanes, c33, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x3(float* a, long rowStep, long kStep, float* b, int ldb, float* c, int ldc, int k0, int k1, bool accumulate)
    {
        float* a0 = a + k0 * kStep, a1 = a0 + rowStep, a2 = a1 + rowStep, a3 = a2 + rowStep;
        Vector512<float> c00 = default, c01 = default, c02 = default, c10 = default, c11 = default, c12 = default,
            c20 = default, c21 = default, c22 = default, c30 = default, c31 = default, c32 = default;
        for (int kk = k0; kk < k1; kk++, a0 += kStep, a1 += kStep, a2 += kStep, a3 += kStep)
        {
            float* br = b + (long)kk * ldb;
            var b0 = Vector512.Load(br);
            var b1 = Vector512.Load(br + Lanes);
            var b2 = Vector512.Load(br + 2 * Lanes);
            var x = Vector512.Create(*a0);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01); c02 = Vector512.FusedMultiplyAdd(x, b2, c02);
            x = Vector512.Create(*a1);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11); c12 = Vector512.FusedMultiplyAdd(x, b2, c12);
            x = Vector512.Create(*a2);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21); c22 = Vector512.FusedMultiplyAdd(x, b2, c22);
            x = Vector512.Create(*a3);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31); c32 = Vector512.FusedMultiplyAdd(x, b2, c32);
        }
        Put(c, c00, accumulate); Put(c + Lanes, c01, accumulate); Put(c + 2 * Lanes, c02, accumulate);
        c += ldc;
        Put(c, c10, accumulate); Put(c + Lanes, c11, accumulate); Put(c + 2 * Lanes, c12, accumulate);
        c += ldc;
        Put(c, c20, accumulate); Put(c + Lanes, c21, accumulate); Put(c + 2 * Lanes, c22, accumulate);
        c += ldc;
        Put(c, c30, accumulate); Put(c + Lanes, c31, accumulate); Put(c + 2 * Lanes, c32, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x2(float* a, long rowStep, long kStep, float* b, int ldb, float* c, int ldc, int k0, int k1, bool accumulate)
    {
        float* a0 = a + k0 * kStep, a1 = a0 + rowStep, a2 = a1 + rowStep, a3 = a2 + rowStep;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        for (int kk = k0; kk < k1; kk++, a0 += kStep, a1 += kStep, a2 += kStep, a3 += kStep)
        {
            float* br = b + (long)kk * ldb;
            var b0 = Vector512.Load(br);
            var b1 = Vector512.Load(br + Lanes);
            var x = Vector512.Create(*a0);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(*a1);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(*a2);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(*a3);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
        }
        Put(c, c00, accumulate); Put(c + Lanes, c01, accumulate);
        c += ldc;
        Put(c, c10, accumulate); Put(c + Lanes, c11, accumulate);
        c += ldc;
        Put(c, c20, accumulate); Put(c + Lanes, c21, accumulate);
        c += ldc;
        Put(c, c30, accumulate); Put(c + Lanes, c31, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x1(float* a, long rowStep, long kStep, float* b, int ldb, float* c, int ldc, int k0, int k1, bool accumulate)
    {
        float* a0 = a + k0 * kStep, a1 = a0 + rowStep, a2 = a1 + rowStep, a3 = a2 + rowStep;
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default;
        for (int kk = k0; kk < k1; kk++, a0 += kStep, a1 += kStep, a2 += kStep, a3 += kStep)
        {
            var bv = Vector512.Load(b + (long)kk * ldb);
            c0 = Vector512.FusedMultiplyAdd(Vector512.Create(*a0), bv, c0);
            c1 = Vector512.FusedMultiplyAdd(Vector512.Create(*a1), bv, c1);
            c2 = Vector512.FusedMultiplyAdd(Vector512.Create(*a2), bv, c2);
            c3 = Vector512.FusedMultiplyAdd(Vector512.Create(*a3), bv, c3);
        }
        Put(c, c0, accumulate); Put(c + ldc, c1, accumulate); Put(c + 2 * ldc, c2, accumulate); Put(c + 3 * ldc, c3, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector512<float> value, bool accumulate) => (accumulate ? Vector512.Load(c) + value : value).Store(c);

    [ThreadStatic] private static nint _scratch;
    [ThreadStatic] private static long _scratchFloats;

    /// <summary>This thread's 64-byte aligned native scratch of at least <paramref name="floats"/> floats, kept for the
    /// next call on the thread (kernels run on pooled WorkerTeam threads; a fresh block per call was page faults each
    /// time). Valid until the thread asks for more.</summary>
    public static float* ThreadScratch(long floats)
    {
        if (_scratchFloats < floats)
        {
            if (_scratch != 0) NativeMemory.AlignedFree((void*)_scratch);
            _scratch = 0;
            _scratch = (nint)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
            _scratchFloats = floats;
        }
        return (float*)_scratch;
    }
}
