using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Tests.Models;

/// <summary>The SwiGLU product through the CPU kernels against libtorch's silu(gate) * up on slices of the fused
/// gate/up output: the product and the gradient of the whole gate/up tensor.</summary>
public class SwiGluKernelTests
{
    private static (Tensor H, Tensor D) Run(Tensor gateUp0, Tensor upstream, bool kernel)
    {
        var gateUp = gateUp0.detach().clone().requires_grad_(true);
        long inter = gateUp.shape[^1] / 2;
        Tensor h;
        if (kernel)
        {
            Assert.True(SwiGluFunction.Covers(gateUp));
            h = SwiGluFunction.Apply(gateUp);
        }
        else h = F.silu(gateUp.narrow(-1, 0, inter)) * gateUp.narrow(-1, inter, inter);
        (h.to(ScalarType.Float32) * upstream).sum().backward();
        return (h.detach().to(ScalarType.Float32), gateUp.grad!.to(ScalarType.Float32));
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void The_kernel_gives_the_libtorch_product_and_gradient(ScalarType dtype)
    {
        if (!CpuKernels.IsSupported) return;   // the kernel is not used on this CPU
        using var scope = NewDisposeScope();
        var gen = new Generator(5);
        // Gates from -40 to 40 as well: sigmoid's tails (exp overflow / underflow) must not give NaN or infinity.
        var gateUp = (torch.randn([3, 7, 2 * 48], generator: gen) * 3).to(dtype);
        gateUp[0, 0, TensorIndex.Slice(0, 4)] = torch.tensor(new[] { -40f, -90f, 40f, 90f }).to(dtype);
        var upstream = torch.randn([3, 7, 48], generator: gen);
        var fused = Run(gateUp, upstream, kernel: true);
        var reference = Run(gateUp, upstream, kernel: false);
        // fp32: a few ulp of the exponential; bf16: libtorch rounds silu(gate) to bf16 before the product, the kernel
        // rounds once, so the two differ by about one bf16 step.
        double tolerance = dtype == ScalarType.Float32 ? 1e-5 : 2e-2;
        foreach (var (name, a, r) in new[] { ("h", fused.H, reference.H), ("d gateUp", fused.D, reference.D) })
        {
            Assert.False(a.isnan().any().item<bool>() || a.isinf().any().item<bool>(), $"{name} is not finite");
            double diff = TestModels.MaxRel(a, r);
            Assert.True(diff < tolerance, $"{dtype} {name}: relative difference {diff}");
        }
    }

    [Fact]
    public void Shapes_the_kernel_does_not_take_are_left_to_libtorch()
    {
        using var scope = NewDisposeScope();
        Assert.True(SwiGluFunction.Covers(torch.randn([2, 64])));
        Assert.False(SwiGluFunction.Covers(torch.randn([2, 48])));                        // I = 24, not a multiple of 16
        Assert.False(SwiGluFunction.Covers(torch.randn([64, 2]).t()));                    // not contiguous
        Assert.False(SwiGluFunction.Covers(torch.randn([2, 64], dtype: ScalarType.Float64)));
    }
}
