using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Models;

/// <summary>RMSNorm through the CPU kernels against the libtorch ops: output and both gradients, and the forward alone
/// without a graph.</summary>
public class RmsNormKernelTests
{
    private static (Tensor Y, Tensor Dx, Tensor Dw) Run(RmsNorm norm, Tensor x0, Tensor upstream, bool kernel)
    {
        var x = x0.detach().clone().requires_grad_(true);
        norm.weight.grad = null;
        var y = norm.forward(x, kernel);
        (y.to(ScalarType.Float32) * upstream).sum().backward();
        return (y.detach().to(ScalarType.Float32), x.grad!.to(ScalarType.Float32), norm.weight.grad!.clone());
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]   // bf16 activations, fp32 master weight: the bf16-compute case
    public void The_kernel_gives_the_libtorch_outputs_and_gradients(ScalarType dtype)
    {
        if (!CpuKernels.IsSupported) return;   // the kernel is not used on this CPU
        using var scope = NewDisposeScope();
        var gen = new Generator(8);
        using var norm = new RmsNorm(48, 1e-5, ScalarType.Float32, null);
        using (torch.no_grad()) norm.weight.copy_(torch.rand([48], generator: gen) + 0.5);
        var x = (torch.randn([3, 7, 48], generator: gen) * 2).to(dtype);
        var upstream = torch.randn([3, 7, 48], generator: gen);
        var fused = Run(norm, x, upstream, kernel: true);
        var reference = Run(norm, x, upstream, kernel: false);
        // fp32: summation order only; bf16: one rounding step of the bf16 results.
        double tolerance = dtype == ScalarType.Float32 ? 1e-5 : 1e-2;
        foreach (var (name, a, r) in new[] { ("y", fused.Y, reference.Y), ("dx", fused.Dx, reference.Dx), ("dw", fused.Dw, reference.Dw) })
        {
            double diff = TestModels.MaxRel(a, r);
            Assert.True(diff < tolerance, $"{dtype} {name}: relative difference {diff}");
        }
    }

    [Theory]
    [InlineData(ScalarType.Float32, 5)]
    [InlineData(ScalarType.BFloat16, 5)]
    [InlineData(ScalarType.BFloat16, 600)]   // rows split over the threads
    public void Without_a_graph_the_kernel_gives_the_libtorch_output(ScalarType dtype, int rows)
    {
        if (!CpuKernels.IsSupported) return;
        using var scope = NewDisposeScope();
        var gen = new Generator(9);
        using var norm = new RmsNorm(64, 1e-6, ScalarType.Float32, null);
        using (torch.no_grad()) norm.weight.copy_(torch.rand([64], generator: gen) + 0.5);
        var x = (torch.randn([rows, 64], generator: gen) * 3).to(dtype);
        using var noGrad = torch.no_grad();
        var fused = norm.forward(x, useKernel: true);
        var reference = norm.forward(x, useKernel: false);
        Assert.Equal(dtype, fused.dtype);
        double diff = TestModels.MaxRel(fused.to(ScalarType.Float32), reference.to(ScalarType.Float32));
        Assert.True(diff < (dtype == ScalarType.Float32 ? 1e-5 : 1e-2), $"{dtype} x {rows}: relative difference {diff}");
        Assert.False(fused.requires_grad);
    }
}
