// The SwiGLU product of the Llama MLP, silu(gate) * up, as one CPU kernel pass each way over the fused gate/up
// projection output (CpuKernels.SwiGluRows): libtorch runs it as two slices, silu and a product forward, and the
// product's and silu's backwards plus two slice backwards (zero-filled copies) and their sum backward, each a pass over
// an (N, I) or (N, 2I) tensor.
using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

internal static class SwiGluFunction
{
    /// <summary>Whether the kernels take <paramref name="gateUp"/> (..., 2I): a contiguous CPU tensor, fp32 or bf16, I a
    /// multiple of 16.</summary>
    public static bool Covers(Tensor gateUp) =>
        CpuKernels.IsSupported && gateUp.device_type == DeviceType.CPU && gateUp.dtype is ScalarType.Float32 or ScalarType.BFloat16 &&
        gateUp.ndim >= 1 && gateUp.shape[^1] % (2 * CpuKernels.Lanes) == 0 && gateUp.is_contiguous();

    /// <summary>silu(gate) * up (..., I) from <paramref name="gateUp"/> (..., 2I), the gate in the first half of the last
    /// dimension, with its gradient as one (..., 2I) tensor.</summary>
    public static Tensor Apply(Tensor gateUp) => Function.apply(gateUp);

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "SwiGlu";

        public override unsafe Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var gateUp = (Tensor)vars[0];
            long inter = gateUp.shape[^1] / 2, rows = gateUp.numel() / (2 * inter);
            var shape = gateUp.shape.ToArray();
            shape[^1] = inter;
            using var noGrad = torch.no_grad();
            var h = torch.empty(shape, dtype: gateUp.dtype);
            byte* input = (byte*)NativeTensors.Data(gateUp, gateUp.dtype), output = (byte*)NativeTensors.Data(h, h.dtype);
            bool bf16 = gateUp.dtype == ScalarType.BFloat16;
            WorkerTeam.ForRanges((int)rows, torch.get_num_threads(), (r0, r1, _) => CpuKernels.SwiGluRows(input, bf16, (int)inter, r0, r1, output));
            if (gateUp.requires_grad) ctx.save_for_backward([gateUp]);
            return h;
        }

        public override unsafe List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var gateUp = ctx.get_saved_variables()[0];
            long inter = gateUp.shape[^1] / 2, rows = gateUp.numel() / (2 * inter);
            using var noGrad = torch.no_grad();
            using var dh = gradOutput.to(gateUp.dtype).contiguous();
            var dGateUp = torch.empty_like(gateUp);
            byte* input = (byte*)NativeTensors.Data(gateUp, gateUp.dtype), gradient = (byte*)NativeTensors.Data(dh, dh.dtype),
                output = (byte*)NativeTensors.Data(dGateUp, dGateUp.dtype);
            bool bf16 = gateUp.dtype == ScalarType.BFloat16;
            WorkerTeam.ForRanges((int)rows, torch.get_num_threads(), (r0, r1, _) => CpuKernels.SwiGluBackwardRows(input, gradient, bf16, (int)inter, r0, r1, output));
            return [dGateUp];
        }
    }
}
