using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Runtime;

/// <summary>The native backend loads in the test host (on Debian 12 only thanks to the build's patch of
/// libLibTorchSharp.so) and computes correctly.</summary>
public class TorchSharpLoadTests
{
    [Fact]
    public void Matmul_matches_hand_computed_product()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.tensor(new float[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        var b = torch.tensor(new float[] { 7, 8, 9, 10, 11, 12 }, [3, 2]);
        var c = torch.mm(a, b);
        Assert.Equal(new float[] { 58, 64, 139, 154 }, c.data<float>().ToArray());
    }

    [Fact]
    public void Bf16_matmul_is_close_to_fp32()
    {
        using var scope = torch.NewDisposeScope();
        var gen = new Generator(7);
        var a = torch.randn([64, 64], generator: gen);
        var b = torch.randn([64, 64], generator: gen);
        var exact = torch.mm(a, b);
        var bf16 = torch.mm(a.to(ScalarType.BFloat16), b.to(ScalarType.BFloat16)).to(ScalarType.Float32);
        double relative = ((bf16 - exact).norm() / exact.norm()).item<float>();
        Assert.InRange(relative, 0, 0.02);
    }

    [Fact]
    public void AdamW_step_reduces_a_quadratic_loss_and_moves_the_weights()
    {
        using var scope = torch.NewDisposeScope();
        var w = new TorchSharp.Modules.Parameter(torch.tensor(new float[] { 3f, -2f }));
        var optimizer = torch.optim.AdamW([w], lr: 0.1, weight_decay: 0.0);
        float Loss() { using var s = torch.NewDisposeScope(); return (w * w).sum().item<float>(); }
        float before = Loss();
        for (int i = 0; i < 5; i++)
        {
            using var step = torch.NewDisposeScope();
            optimizer.zero_grad();
            var loss = (w * w).sum();
            loss.backward();
            optimizer.step();
        }
        Assert.True(Loss() < before, "AdamW did not reduce w·w");
        var values = w.detach().data<float>().ToArray();
        // Adam moves each weight by about lr per step against the gradient's sign.
        Assert.InRange(values[0], 2.4f, 2.6f);
        Assert.InRange(values[1], -1.6f, -1.4f);
    }

    [Fact]
    public void Runtime_description_reports_versions_and_threads()
    {
        var info = TorchRuntime.Describe();
        Assert.Equal("0.107.0", info.TorchSharpVersion);
        Assert.StartsWith("2.10", info.LibTorchVersion);
        Assert.True(info.Threads >= 1);
    }

    [Fact]
    public void Matmul_benchmark_measures_a_positive_rate()
    {
        var result = MatmulBenchmark.Measure(ScalarType.Float32, size: 128, repetitions: 2, callsPerRound: 2);
        Assert.Equal("fp32", result.DType);
        Assert.True(result.BestGflops > 0.01 && double.IsFinite(result.BestGflops));
        Assert.True(result.BestGflops >= result.MedianGflops);
    }
}
