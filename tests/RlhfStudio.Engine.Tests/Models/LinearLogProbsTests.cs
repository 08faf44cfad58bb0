using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Tests.Models;

public class LinearLogProbsTests
{
    [Theory]
    [InlineData(ScalarType.Float32, 1.0, true)]
    [InlineData(ScalarType.Float32, 0.7, true)]    // a sampling temperature: the distribution of logits / 0.7
    [InlineData(ScalarType.BFloat16, 0.7, true)]
    [InlineData(ScalarType.Float32, 0.7, false)]   // libtorch ops
    public void Log_probs_entropy_and_gradients_match_log_softmax_of_the_scaled_logits(ScalarType dtype, double divisor, bool kernel)
    {
        using var scope = NewDisposeScope();
        var probe = torch.zeros(1, dtype: dtype);
        if (kernel && !LinearCrossEntropy.UsesKernel(probe)) return;   // no AVX-512 here: the libtorch row covers it
        var gen = new torch.Generator(5);
        long n = 29, c = 16, v = 70;
        var hidden = torch.randn([n, c], generator: gen).to(dtype).requires_grad_();
        var master = torch.randn([v, c], generator: gen).mul(0.5).requires_grad_();
        var targets = torch.randint(0, v, [n], generator: gen, dtype: ScalarType.Int64);
        targets[4] = torch.tensor(LinearCrossEntropy.IgnoreIndex);
        var upstream = torch.randn([n], generator: gen);   // a per-token weighting, as PPO's loss gives it

        var stats = new TokenLossStats();
        var (logProbs, entropy) = LinearLogProbs.Compute(hidden, master.to(dtype), targets, divisor, withEntropy: true, stats, useKernel: kernel);
        (logProbs * upstream).sum().backward();
        var gotHidden = hidden.grad!.to(ScalarType.Float32).clone();
        var gotWeight = master.grad!.clone();
        hidden.grad!.zero_();
        master.grad!.zero_();

        var logits = F.linear(hidden, master.to(dtype)).to(ScalarType.Float32) / divisor;
        var valid = targets.ne(LinearCrossEntropy.IgnoreIndex);
        var all = F.log_softmax(logits, -1);
        var expected = all.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1) * valid.to(ScalarType.Float32);
        (expected * upstream).sum().backward();
        var expectedEntropy = -(all.exp() * all).sum(-1);
        double tolerance = dtype == ScalarType.Float32 ? 1e-4 : 2e-2;
        Assert.True(TestModels.MaxRel(logProbs, expected.detach()) < tolerance, $"log-probs differ by {TestModels.MaxRel(logProbs, expected.detach())}");
        Assert.Equal(0f, logProbs[4].item<float>());
        Assert.True(TestModels.MaxRel(entropy!, expectedEntropy.detach()) < tolerance, $"entropies differ by {TestModels.MaxRel(entropy!, expectedEntropy.detach())}");
        Assert.True(TestModels.MaxRel(gotHidden, hidden.grad!.to(ScalarType.Float32)) < tolerance, $"hidden gradients differ by {TestModels.MaxRel(gotHidden, hidden.grad!.to(ScalarType.Float32))}");
        Assert.True(TestModels.MaxRel(gotWeight, master.grad!) < tolerance, $"weight gradients differ by {TestModels.MaxRel(gotWeight, master.grad!)}");
        Assert.Equal(0f, gotHidden[4].abs().max().item<float>());   // an ignored row gets no gradient
        Assert.Equal(n - 1, stats.Labelled);
        Assert.Equal(logits.argmax(-1).eq(targets).logical_and(valid).sum().item<long>(), stats.Correct);
    }

    [Fact]
    public void A_model_head_with_an_adapter_goes_through_its_logits_with_the_same_result()
    {
        using var scope = NewDisposeScope();
        using var model = TestModels.RandomCausal(TestModels.Llama(hidden: 64), seed: 3);
        var gen = new torch.Generator(2);
        var hidden = torch.randn([2, 5, 64], generator: gen);
        var tokens = torch.randint(0, TestModels.Vocab, [2, 5], generator: gen, dtype: ScalarType.Int64);
        var (plain, _) = model.TokenLogProbs(hidden, tokens, 1.3);
        Assert.Equal(new long[] { 2, 5 }, plain.shape);
        Engine.Adapters.Lora.Apply(model, new Engine.Adapters.LoraConfig { Rank = 2, TargetModules = ["lm_head"] });   // B = 0: the same function
        var (viaLogits, entropy) = model.TokenLogProbs(hidden, tokens, 1.3, withEntropy: true);
        Assert.True(TestModels.MaxRel(viaLogits, plain) < 1e-5, $"differ by {TestModels.MaxRel(viaLogits, plain)}");
        Assert.Equal(new long[] { 2, 5 }, entropy!.shape);
    }
}
