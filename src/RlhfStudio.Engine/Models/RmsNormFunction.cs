// RMSNorm forward and backward as one CPU kernel pass each (CpuKernels.RmsNormRows), for every forward (with a graph when recording gradients): libtorch's
// ops make five passes forward (cast, square, mean, rsqrt product, weight product and cast back) and more backward,
// over (B, T, C) tensors, 1.4 ms a norm at the tiny bench's 2,048 x 256; the kernels take ~0.3 ms.
using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

internal static class RmsNormFunction
{
    /// <summary>Whether the kernels take x and weight: CPU tensors with the kernels, x fp32 or bf16, an fp32 weight,
    /// hidden size a multiple of 16.</summary>
    public static bool Covers(Tensor x, Tensor weight) =>
        CpuKernels.IsSupported && x.device_type == DeviceType.CPU && weight.device_type == DeviceType.CPU &&
        x.dtype is ScalarType.Float32 or ScalarType.BFloat16 && weight.dtype == ScalarType.Float32 && x.shape[^1] % CpuKernels.Lanes == 0;

    public static Tensor Apply(Tensor x, Tensor weight, double eps) => Function.apply(x, weight, eps);

    /// <summary>The forward alone, for passes that record no gradient (rollout scoring, reference and reward models,
    /// prefill): the same kernel, no graph node and nothing kept.</summary>
    public static Tensor Infer(Tensor x, Tensor weight, double eps)
    {
        using var inverseRms = torch.empty([x.numel() / x.shape[^1]], dtype: ScalarType.Float32);
        return Forward(x.contiguous(), weight.contiguous(), (float)eps, inverseRms);
    }

    /// <summary>Rows at which the forward is split over libtorch's threads (no weight-gradient partials to merge, unlike
    /// the backward, which stays on one thread).</summary>
    private const int ParallelRows = 256;

    /// <summary>y = RMSNorm(x) in x's dtype, 1 / rms of each row into <paramref name="inverseRms"/>.</summary>
    private static unsafe Tensor Forward(Tensor x, Tensor weight, float eps, Tensor inverseRms)
    {
        long n = x.shape[^1], rows = x.numel() / n;
        bool bf16 = x.dtype == ScalarType.BFloat16;
        var y = torch.empty_like(x);
        byte* xs = (byte*)NativeTensors.Data(x, x.dtype), ys = (byte*)NativeTensors.Data(y, y.dtype);
        float* w = (float*)NativeTensors.Data(weight, ScalarType.Float32), inv = (float*)NativeTensors.Data(inverseRms, ScalarType.Float32);
        WorkerTeam.ForRanges((int)rows, rows >= ParallelRows ? torch.get_num_threads() : 1, (r0, r1, _) =>
            CpuKernels.RmsNormRows(xs, bf16, (int)n, w, eps, r0, r1, inv, ys));
        return y;
    }

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "RmsNorm";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = ((Tensor)vars[0]).contiguous();
            var weight = ((Tensor)vars[1]).contiguous();
            var inverseRms = torch.empty([x.numel() / x.shape[^1]], dtype: ScalarType.Float32);
            var y = RmsNormFunction.Forward(x, weight, (float)(double)vars[2], inverseRms);
            ctx.save_for_backward([x, weight, inverseRms]);
            return y;
        }

        public override unsafe List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (x, weight, inverseRms) = (saved[0], saved[1], saved[2]);
            using var dy = gradOutput.to(x.dtype).contiguous();
            long n = x.shape[^1], rows = x.numel() / n;
            var dx = torch.empty_like(x);
            var dw = torch.zeros([n], dtype: ScalarType.Float32);
            CpuKernels.RmsNormBackwardRows((byte*)NativeTensors.Data(x, x.dtype), (byte*)NativeTensors.Data(dy, dy.dtype), x.dtype == ScalarType.BFloat16, (int)n,
                (float*)NativeTensors.Data(weight, ScalarType.Float32), (float*)NativeTensors.Data(inverseRms, ScalarType.Float32), 0, (int)rows,
                (byte*)NativeTensors.Data(dx, dx.dtype), (float*)NativeTensors.Data(dw, ScalarType.Float32));
            return [dx, weight.requires_grad ? dw : null!, null!];
        }
    }
}
