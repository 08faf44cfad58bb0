using RlhfStudio.Engine.Runtime;

namespace RlhfStudio.Engine.Tests.Runtime;

public class CpuKernelsMathTests
{
    [Fact]
    public void Parts_of_a_scaled_log_sum_exp_combine_to_the_whole_rows()
    {
        if (!CpuKernels.IsSupported) return;
        var random = new Random(5);
        var x = Enumerable.Range(0, 77).Select(_ => (float)(random.NextDouble() * 40 - 20)).ToArray();
        const float divisor = 0.7f;
        double expected = Math.Log(x.Sum(v => Math.Exp(v / divisor - x.Max() / divisor))) + x.Max() / divisor;
        unsafe
        {
            fixed (float* p = x) Check(p);
        }

        unsafe void Check(float* p)
        {
            var empty = CpuKernels.ScaledExpSum(p, 10, 10, divisor);
            Assert.Equal((float.NegativeInfinity, 0f), empty);
            // Ranges with whole vectors and scalar tails, as the decoder's threads split a vocabulary.
            var parts = new[] { CpuKernels.ScaledExpSum(p, 0, 36, divisor), CpuKernels.ScaledExpSum(p, 36, 77, divisor), empty };
            float max = parts.Max(q => q.Max);
            double sum = parts.Where(q => q.Sum > 0).Sum(q => q.Sum * Math.Exp(q.Max - max));
            Assert.Equal(expected, max + Math.Log(sum), 4);
            var whole = CpuKernels.ScaledExpSum(p, 0, 77, divisor);
            Assert.Equal(expected, whole.Max + Math.Log(whole.Sum), 4);
            Assert.Equal(x.Max() / divisor, whole.Max, 5);
        }
    }
}
