using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Tests.Models;

public class LinearCrossEntropyTests
{
    private static (Tensor Hidden, Tensor Weight, Tensor Targets) Inputs(ScalarType dtype, long n = 37, long c = 16, long v = 50)
    {
        using var gen = new torch.Generator(7);
        var hidden = torch.randn([n, c], generator: gen).to(dtype).requires_grad_();
        var master = torch.randn([v, c], generator: gen).mul(0.5).requires_grad_();          // fp32 master weight
        var targets = torch.randint(0, v, [n], generator: gen, dtype: ScalarType.Int64);
        targets[3] = torch.tensor(LinearCrossEntropy.IgnoreIndex);
        targets[TensorIndex.Slice(20, 24)] = torch.tensor(LinearCrossEntropy.IgnoreIndex);
        return (hidden, master, targets);
    }

    [Theory]
    [InlineData(ScalarType.Float32, 8, false)]      // libtorch ops: several chunks, the last one short
    [InlineData(ScalarType.Float32, 1000, false)]   // one chunk
    [InlineData(ScalarType.BFloat16, 8, false)]
    [InlineData(ScalarType.Float32, 0, true)]       // the CPU kernels (where this CPU has them): no chunks
    [InlineData(ScalarType.BFloat16, 0, true)]
    public void Loss_gradients_and_accuracy_match_cross_entropy_on_the_full_logits(ScalarType dtype, int chunk, bool kernel)
    {
        if (kernel && !LinearCrossEntropy.UsesKernel(torch.zeros(1, dtype: dtype))) return;   // no AVX-512: the rows above cover it
        using var scope = NewDisposeScope();
        var (hidden, master, targets) = Inputs(dtype);
        var stats = new TokenLossStats();
        // The weight enters in the matmul dtype through a cast that stays in the graph, as a bf16-compute model's head does.
        var fused = LinearCrossEntropy.Sum(hidden, master.to(dtype), targets, stats, kernel ? null : chunk, kernel);
        fused.mul(0.5).backward();                                     // a scaled upstream gradient, as the loop's division
        var fusedHidden = hidden.grad!.to(ScalarType.Float32).clone();
        var fusedWeight = master.grad!.clone();
        hidden.grad!.zero_();
        master.grad!.zero_();

        var logits = F.linear(hidden, master.to(dtype)).to(ScalarType.Float32);
        var plain = F.cross_entropy(logits, targets, ignore_index: LinearCrossEntropy.IgnoreIndex, reduction: nn.Reduction.Sum);
        plain.mul(0.5).backward();
        double tolerance = dtype == ScalarType.Float32 ? 1e-4 : 2e-2;
        Assert.Equal(ScalarType.Float32, fused.dtype);
        Assert.Equal(plain.item<float>(), fused.item<float>(), dtype == ScalarType.Float32 ? 3 : 1);
        Assert.True(TestModels.MaxRel(fusedHidden, hidden.grad!.to(ScalarType.Float32)) < tolerance, $"hidden gradients differ by {TestModels.MaxRel(fusedHidden, hidden.grad!.to(ScalarType.Float32))}");
        Assert.True(TestModels.MaxRel(fusedWeight, master.grad!) < tolerance, $"weight gradients differ by {TestModels.MaxRel(fusedWeight, master.grad!)}");
        var valid = targets.ne(LinearCrossEntropy.IgnoreIndex);
        Assert.Equal(valid.sum().item<long>(), stats.Labelled);
        Assert.Equal(logits.argmax(-1).eq(targets).logical_and(valid).sum().item<long>(), stats.Correct);
        // Ignored rows get no gradient at all.
        Assert.Equal(0f, fusedHidden[3].abs().max().item<float>());
    }

    [Fact]
    public void Without_gradients_it_only_counts_and_a_model_with_an_adapter_on_its_head_falls_back_to_full_logits()
    {
        using var scope = NewDisposeScope();
        var (hidden, master, targets) = Inputs(ScalarType.Float32);
        float value;
        using (no_grad()) value = LinearCrossEntropy.Sum(hidden, master, targets).item<float>();
        var expected = F.cross_entropy(F.linear(hidden, master), targets, ignore_index: LinearCrossEntropy.IgnoreIndex, reduction: nn.Reduction.Sum).item<float>();
        Assert.Equal(expected, value, 3);

        var config = TestModels.Llama(tied: false);
        using var model = TestModels.RandomCausal(config, seed: 2);
        var ids = TestModels.RandomIds(2, 6, seed: 3);
        var h = model.Hidden(ids);
        var t = ids.roll(-1, 1);
        var fusedLoss = model.TokenLossSum(h, t, new TokenLossStats(), chunked: true).item<float>();
        Assert.Equal(model.TokenLossSum(h, t, new TokenLossStats(), chunked: false).item<float>(), fusedLoss, 3);
        Engine.Adapters.Lora.Apply(model, new Engine.Adapters.LoraConfig { Rank = 2, TargetModules = ["lm_head"] });
        var viaLogits = model.TokenLossSum(h, t, new TokenLossStats(), chunked: true).item<float>();   // B = 0: the same function
        Assert.Equal(fusedLoss, viaLogits, 3);
    }

}
