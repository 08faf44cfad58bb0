using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Adapters.AdapterTestKit;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.Adapters;

public class ComputeDTypeTests
{
    public static TheoryData<string> Families => new() { "llama", "llama-tied", "gpt2" };

    private static CausalLanguageModel Make(string family) => family switch
    {
        "llama" => RandomCausal(Llama()),
        "llama-tied" => RandomCausal(Llama(tied: true)),
        "gpt2" => RandomCausal(Gpt2()),
        _ => throw new ArgumentException(family),
    };

    private static double RelativeError(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var e = expected.to(ScalarType.Float32);
        return (actual.to(ScalarType.Float32) - e).norm().item<float>() / e.norm().item<float>();
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Bf16_compute_logits_are_close_to_fp32_and_weights_stay_fp32(string family)
    {
        using var scope = NewDisposeScope();
        using var model = Make(family);
        var ids = RandomIds(2, 8, seed: 1);
        var fp32 = model.Forward(ids);
        model.ComputeDType = ScalarType.BFloat16;
        var bf16 = model.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        Assert.Equal(ScalarType.BFloat16, model.Hidden(ids).dtype);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
        double error = RelativeError(bf16, fp32);
        Assert.True(error < 2e-2, $"relative error {error}");
        Assert.True(error > 1e-5, $"relative error {error}: bf16 was not used");   // bf16 has 8 mantissa bits: some error must show

        model.ComputeDType = null;
        Assert.True(Same(fp32, model.Forward(ids)));
    }

    [Fact]
    public void Gradients_reach_the_fp32_master_weights_through_the_casts()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        model.ComputeDType = ScalarType.BFloat16;
        var loss = NextTokenLoss(model, RandomIds(2, 8, seed: 1));
        loss.backward();
        foreach (var (name, p) in model.named_parameters())
        {
            Assert.NotNull(p.grad);
            Assert.Equal(ScalarType.Float32, p.grad!.dtype);
            Assert.True(p.grad.abs().max().item<float>() > 0, name);
        }
    }

    [Fact]
    public void An_adamw_step_with_fp32_masters_and_bf16_compute_reduces_the_loss()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        model.ComputeDType = ScalarType.BFloat16;
        var ids = RandomIds(2, 9, seed: 5);
        var before = model.HfWeights()["model.layers.0.mlp.up_proj.weight"].clone();
        float first = Step(model, ids, lr: 1e-3);
        using var after = NextTokenLoss(model, ids);
        Assert.True(after.item<float>() < first, $"loss {first} -> {after.item<float>()}");
        // A 1e-3 step moves fp32 weights by amounts bf16 weights could not hold (its spacing near 0.2 is ~1e-3).
        var moved = (model.HfWeights()["model.layers.0.mlp.up_proj.weight"] - before).abs();
        Assert.True(moved.max().item<float>() > 0 && moved.max().item<float>() < 2e-3);
    }

    [Fact]
    public void Lora_adapters_compute_in_bf16_and_their_fp32_weights_get_gradients()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        var ids = RandomIds(2, 8, seed: 1);
        Lora.Apply(model, new LoraConfig { Rank = 4, Alpha = 8, TargetModules = [LoraConfig.AllLinear] });
        RandomizeAdapters(model, 3);
        var fp32 = model.Forward(ids);
        model.ComputeDType = ScalarType.BFloat16;
        Assert.True(RelativeError(model.Forward(ids), fp32) < 2e-2);
        var loss = NextTokenLoss(model, ids);
        loss.backward();
        Assert.All(Lora.AdapterParameters(model), p =>
        {
            Assert.Equal(ScalarType.Float32, p.Parameter.grad!.dtype);
            Assert.True(p.Parameter.grad.abs().max().item<float>() > 0, p.Name);
        });
    }

    [Fact]
    public void Kv_cache_runs_in_the_compute_dtype_and_incremental_decoding_matches_the_full_pass()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        model.ComputeDType = ScalarType.BFloat16;
        var ids = RandomIds(1, 6, seed: 2);
        var full = model.Forward(ids);
        using var cache = model.NewCache(1, 8);
        var prefix = model.Forward(ids.narrow(1, 0, 5), cache: cache);
        var last = model.Forward(ids.narrow(1, 5, 1), cache: cache);
        Assert.Equal(ScalarType.BFloat16, last.dtype);
        Assert.True(MaxDiff(full.narrow(1, 5, 1), last) < 0.05 * MaxDiff(full, torch.zeros_like(full)));
        Assert.True(MaxDiff(full.narrow(1, 0, 5), prefix) < 1e-6);
    }

    [Fact]
    public void Score_model_scores_come_out_in_the_compute_dtype_close_to_fp32()
    {
        using var scope = NewDisposeScope();
        using var model = Randomize(new ScoreModel(Llama() with { NumLabels = 1 }), 3);
        var ids = RandomIds(2, 8, seed: 1);
        var fp32 = model.Forward(ids);
        model.ComputeDType = ScalarType.BFloat16;
        var bf16 = model.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        Assert.True(RelativeError(bf16, fp32) < 2e-2);
    }

    [Fact]
    public void Compute_dtype_must_be_floating_point()
    {
        using var model = new CausalLanguageModel(Llama(layers: 1));
        Assert.Throws<ArgumentException>(() => model.ComputeDType = ScalarType.Int64);
    }
}
