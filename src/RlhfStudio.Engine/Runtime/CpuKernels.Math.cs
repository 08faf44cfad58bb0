using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RlhfStudio.Engine.Runtime;

internal static partial class CpuKernels
{
    /// <summary>e^x for 16 floats within ~2 ulp (Cephes' expf: 2^n times a degree-6 polynomial on [-ln2/2, ln2/2]),
    /// exactly 0 below -87.3 (e^-inf = 0), inlined into the kernels. Vector512.Exp is a generic CoreLib method that runs
    /// quick-jitted (unoptimised) code until tiered compilation promotes it, which takes seconds of a training run
    /// (measured: half of the attention kernels' time in a short benchmark).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Exp(Vector512<float> x)
    {
        var clamped = Vector512.Min(Vector512.Max(x, Vector512.Create(-87.3365f)), Vector512.Create(88.3762f));
        var n = Avx512F.RoundScale(clamped * Vector512.Create(1.44269504088896341f), 0);   // round to nearest
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), clamped);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
        var p = Vector512.Create(1.9875691500e-4f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        var y = Vector512.FusedMultiplyAdd(p, r * r, r) + Vector512<float>.One;
        var scale = ((Avx512F.ConvertToVector512Int32(n) + Vector512.Create(127)) << 23).AsSingle();
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(-87.3365f)), Vector512<float>.Zero, y * scale);
    }
}
