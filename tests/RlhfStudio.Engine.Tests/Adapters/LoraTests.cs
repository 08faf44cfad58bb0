using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Adapters.AdapterTestKit;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.Adapters;

public class LoraTests
{
    private static readonly LoraConfig QV = new() { Rank = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"] };

    [Fact]
    public void Fresh_adapters_have_B_zero_and_leave_the_outputs_exactly_unchanged()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        var ids = RandomIds(2, 7, seed: 1);
        var before = model.Forward(ids);
        var result = Lora.Apply(model, QV, seed: 3);
        Assert.Equal(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"], result.AdaptedModules);
        var q = model.Projections().Single(p => p.Name == "model.layers.0.self_attn.q_proj").Projection;
        Assert.Equal([4L, 32L], q.Adapter!.A.weight.shape);   // A [r, in]
        Assert.Equal([32L, 4L], q.Adapter.B.weight.shape);    // B [out, r]
        Assert.Equal(0f, q.Adapter.B.weight.abs().max().item<float>());
        Assert.True(q.Adapter.A.weight.abs().max().item<float>() > 0);
        Assert.Equal(2.0, q.Adapter.Scaling);                 // alpha / r
        Assert.True(Same(before, model.Forward(ids)));
    }

    [Fact]
    public void A_is_kaiming_uniform_within_one_over_sqrt_fan_in_and_depends_on_the_seed()
    {
        using var scope = NewDisposeScope();
        using var one = RandomCausal(Llama());
        using var two = RandomCausal(Llama());
        Lora.Apply(one, QV, seed: 3);
        Lora.Apply(two, QV, seed: 4);
        var a1 = Lora.AdapterParameters(one)[0].Parameter;
        var a2 = Lora.AdapterParameters(two)[0].Parameter;
        double bound = 1 / Math.Sqrt(32);
        Assert.True(a1.abs().max().item<float>() <= bound);
        Assert.True(a1.abs().max().item<float>() > 0.8 * bound);   // uniform over the whole range, not a narrower init
        Assert.False(Same(a1, a2));
    }

    [Fact]
    public void Only_adapter_parameters_get_gradients_and_a_step_makes_B_non_zero_and_changes_the_outputs()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        var ids = RandomIds(2, 7, seed: 1);
        var before = model.Forward(ids);
        var result = Lora.Apply(model, QV, seed: 3);
        Assert.Equal(result.AdapterParameters, result.Report.Trainable);
        Assert.Equal(2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4), result.AdapterParameters);   // 2 layers x (q, v); v_proj out is 16 (2 kv heads)

        var loss = NextTokenLoss(model, ids);
        loss.backward();
        foreach (var (name, p) in model.named_parameters())
        {
            bool isAdapter = name.Contains(".lora_", StringComparison.Ordinal);
            Assert.Equal(isAdapter, p.requires_grad);
            if (!isAdapter) Assert.Null(p.grad);
        }
        // B = 0: A gets no gradient yet, B does.
        var b = model.named_parameters().Single(x => x.name == "model.layers.0.self_attn.q_proj.lora_B.weight").parameter;
        Assert.True(b.grad!.abs().max().item<float>() > 0);

        Step(model, ids);
        Assert.True(b.abs().max().item<float>() > 0);
        Assert.True(MaxDiff(before, model.Forward(ids)) > 1e-4);
    }

    [Fact]
    public void Training_steps_reduce_the_loss_with_only_adapters_trainable()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        var ids = RandomIds(2, 9, seed: 5);
        Lora.Apply(model, new LoraConfig { Rank = 4, Alpha = 16, TargetModules = [LoraConfig.AllLinear] }, seed: 3);
        float first = Step(model, ids);
        for (int i = 0; i < 4; i++) Step(model, ids);
        using var last = NextTokenLoss(model, ids);
        Assert.True(last.item<float>() < first - 0.05, $"loss {first} -> {last.item<float>()}");
    }

    [Fact]
    public void Merged_equals_unmerged_and_unmerge_restores_the_weights()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        var ids = RandomIds(2, 7, seed: 1);
        Lora.Apply(model, QV, seed: 3);
        RandomizeAdapters(model, 11);
        var original = model.HfWeights().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var unmerged = model.Forward(ids);

        Lora.Merge(model);
        var q = model.HfWeights()["model.layers.0.self_attn.q_proj.weight"];
        Assert.True(MaxDiff(q, original["model.layers.0.self_attn.q_proj.weight"]) > 1e-3);   // the update is in W now
        Assert.True(MaxDiff(unmerged, model.Forward(ids)) < 1e-5);
        Assert.False(model.HasUnmergedAdapters);

        Lora.Unmerge(model);
        foreach (var (name, w) in model.HfWeights()) Assert.True(MaxDiff(w, original[name]) < 1e-6, name);
        Assert.True(MaxDiff(unmerged, model.Forward(ids)) < 1e-5);
    }

    [Fact]
    public void Disabled_adapters_give_exactly_the_base_model_while_the_adapters_stay_non_zero()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        var ids = RandomIds(2, 7, seed: 1);
        var baseline = model.Forward(ids);
        Lora.Apply(model, QV, seed: 3);
        RandomizeAdapters(model, 11);
        var adapted = model.Forward(ids);
        Assert.True(MaxDiff(baseline, adapted) > 1e-3);
        using (Lora.Disabled(model))
        {
            Assert.True(Same(baseline, model.Forward(ids)));
            Assert.True(Lora.AdapterParameters(model).All(p => p.Parameter.abs().max().item<float>() > 0));
        }
        Assert.True(Same(adapted, model.Forward(ids)));   // back on after the scope

        Lora.Merge(model);
        Assert.Throws<InvalidOperationException>(() => Lora.Disabled(model));
    }

    [Fact]
    public void All_linear_targets_every_projection_except_the_output_head()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama(layers: 1));
        var result = Lora.Apply(model, new LoraConfig { TargetModules = [LoraConfig.AllLinear] });
        Assert.Equal(7, result.AdaptedModules.Count);
        Assert.DoesNotContain("lm_head", result.AdaptedModules);
        Assert.Equal(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"], result.Config.TargetModules);
        Assert.Null(model.lm_head!.Adapter);

        using var score = Randomize(new ScoreModel(Llama(layers: 1) with { NumLabels = 1 }), 3);
        var scored = Lora.Apply(score, new LoraConfig { TargetModules = [LoraConfig.AllLinear] });
        Assert.DoesNotContain("score", scored.AdaptedModules);
        Assert.Equal(["score"], scored.Config.ModulesToSave);
        Assert.True(score.score.weight.requires_grad);   // PEFT's SEQ_CLS trains the head in full
        Assert.Equal(scored.AdapterParameters + 32, scored.Report.Trainable);
    }

    [Fact]
    public void Explicit_lm_head_target_is_allowed_and_unknown_targets_are_named_in_the_error()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama(layers: 1));
        var e = Assert.Throws<ArgumentException>(() => Lora.Apply(model, new LoraConfig { TargetModules = ["q_proj", "c_attn"] }));
        Assert.Contains("\"c_attn\"", e.Message);
        Assert.Contains("q_proj", e.Message);   // lists what there is
        Assert.All(model.parameters(), p => Assert.True(p.requires_grad));   // nothing was frozen by the failed call
        var result = Lora.Apply(model, new LoraConfig { TargetModules = ["lm_head"] });
        Assert.Equal(["lm_head"], result.AdaptedModules);
        Assert.Throws<InvalidOperationException>(() => Lora.Apply(model, QV));
    }

    [Fact]
    public void Gpt2_conv1d_lora_equals_the_explicit_computation_with_the_weight_stored_in_by_out()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Gpt2());
        Lora.Apply(model, new LoraConfig { Rank = 2, Alpha = 6, TargetModules = ["c_attn"] }, seed: 2);
        RandomizeAdapters(model, 5);
        var c = model.Projections().Single(p => p.Name == "transformer.h.0.attn.c_attn").Projection;
        Assert.Equal([32L, 96L], c.weight.shape);           // Conv1D: [in, out]
        Assert.Equal([2L, 32L], c.Adapter!.A.weight.shape);  // PEFT: A [r, in], B [out, r] whatever the base layout
        Assert.Equal([96L, 2L], c.Adapter.B.weight.shape);

        var x = torch.randn(2, 3, 32, generator: new Generator(9));
        var expected = torch.matmul(x, c.weight) + c.bias! + torch.matmul(torch.matmul(x, c.Adapter.A.weight.t()), c.Adapter.B.weight.t()) * 3.0;
        Assert.True(MaxDiff(expected, c.forward(x)) < 1e-5);

        // Merging adds (B A)^T * scaling to the [in, out] weight.
        var mergedWeight = c.weight + torch.mm(c.Adapter.B.weight, c.Adapter.A.weight).t() * 3.0;
        Lora.Merge(model);
        Assert.True(MaxDiff(mergedWeight, c.weight) < 1e-6);
        Assert.True(MaxDiff(expected, c.forward(x)) < 1e-5);
    }

    [Fact]
    public void Gpt2_with_lora_equals_a_plain_model_holding_the_merged_weights()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Gpt2(), seed: 4);
        using var plain = RandomCausal(Gpt2(), seed: 4);
        Lora.Apply(model, new LoraConfig { Rank = 2, Alpha = 4, TargetModules = [LoraConfig.AllLinear] });
        RandomizeAdapters(model, 5);
        using (torch.no_grad())
            foreach (var (name, p) in model.Projections().Where(p => p.Projection.Adapter is not null))
            {
                var a = p.Adapter!;
                plain.HfWeights()[name + ".weight"].add_(torch.mm(a.B.weight, a.A.weight).t() * a.Scaling);
            }
        var ids = RandomIds(2, 6, seed: 3);
        Assert.True(MaxDiff(plain.Forward(ids), model.Forward(ids)) < 1e-4);
    }

    [Fact]
    public void Dropout_applies_to_the_adapter_input_in_training_mode_only()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        Lora.Apply(model, QV with { Dropout = 0.5 });
        RandomizeAdapters(model, 11);
        var ids = RandomIds(1, 6, seed: 1);
        model.train();
        Assert.False(Same(model.Forward(ids), model.Forward(ids)));
        model.eval();
        Assert.True(Same(model.Forward(ids), model.Forward(ids)));
        using (Lora.Disabled(model))
        {
            model.train();
            Assert.True(Same(model.Forward(ids), model.Forward(ids)));   // dropout is only on the adapter path
        }
    }

    [Fact]
    public void Adapters_are_fp32_on_a_bf16_base_and_merge_and_unload_gives_a_plain_model()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama(), dtype: ScalarType.BFloat16);
        Lora.Apply(model, QV);
        Assert.All(Lora.AdapterParameters(model), p => Assert.Equal(ScalarType.Float32, p.Parameter.dtype));
        RandomizeAdapters(model, 2);
        var ids = RandomIds(1, 6, seed: 1);
        var adapted = model.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, adapted.dtype);

        Lora.MergeAndUnload(model);
        Assert.Null(Lora.ConfigOf(model));
        Assert.DoesNotContain(model.state_dict().Keys, k => k.Contains("lora_"));
        Assert.All(model.parameters(), p => Assert.True(p.requires_grad));
        Assert.True(MaxDiff(adapted, model.Forward(ids)) < 0.1);   // merged into bf16 weights: bf16 rounding only
    }

    [Fact]
    public void Adapter_tensors_appear_under_lora_names_and_hf_weights_are_the_base_names()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        var baseKeys = model.state_dict().Keys.Order(StringComparer.Ordinal).ToList();
        Lora.Apply(model, QV);
        Assert.Equal(baseKeys, model.HfWeights().Keys.Order(StringComparer.Ordinal).ToList());
        Assert.Contains("model.layers.1.self_attn.v_proj.lora_A.weight", model.state_dict().Keys);
        Assert.Contains("model.layers.1.self_attn.v_proj.lora_B.weight", model.state_dict().Keys);
        Assert.Equal(baseKeys.Count + 8, model.state_dict().Count);
    }

    [Fact]
    public void Disposing_a_model_with_adapters_frees_every_tensor_and_removing_them_frees_theirs()
    {
        long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        long before = Live();
        var model = new CausalLanguageModel(Llama());
        long plain = Live();
        Lora.Apply(model, QV);
        Assert.True(Live() > plain);
        Lora.Remove(model);
        Assert.Equal(plain, Live());
        Lora.Apply(model, QV);
        var a = Lora.AdapterParameters(model)[0].Parameter;
        model.Dispose();
        Assert.True(a.IsInvalid);
        Assert.Equal(before, Live());
    }
}
