// RMSNorm forward and backward as one CPU kernel pass each (CpuKernels.RmsNormRows), for training forwards: libtorch's
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

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "RmsNorm";

        public override unsafe Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = ((Tensor)vars[0]).contiguous();
            var weight = ((Tensor)vars[1]).contiguous();
            float eps = (float)(double)vars[2];
            long n = x.shape[^1], rows = x.numel() / n;
            bool bf16 = x.dtype == ScalarType.BFloat16;
            var y = torch.empty_like(x);
            var inverseRms = torch.empty([rows], dtype: ScalarType.Float32);
            CpuKernels.RmsNormRows((byte*)NativeTensors.Data(x, x.dtype), bf16, (int)n, (float*)NativeTensors.Data(weight, ScalarType.Float32), eps, 0, (int)rows,
                (float*)NativeTensors.Data(inverseRms, ScalarType.Float32), (byte*)NativeTensors.Data(y, y.dtype));
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
