using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.Models;

/// <summary>The speed paths (q/k/v and gate/up fused into one matmul, inference copies of the weights, rotary tables)
/// compute what the plain per-projection path computes.</summary>
public class FastPathTests
{
    private static Tensor Loss(Tensor logits) => logits.to(ScalarType.Float32).pow(2).mean();

    [Fact]
    public void Fused_projections_match_separate_ones_in_logits_and_gradients()
    {
        using var scope = NewDisposeScope();
        var config = Llama(kvHeads: 2);
        using var fused = RandomCausal(config, seed: 3);
        using var separate = RandomCausal(config, seed: 3);
        // A fresh adapter has B = 0 (PEFT's init): the same function, but an active adapter keeps every projection separate.
        Lora.Apply(separate, new LoraConfig { Rank = 2 });
        foreach (var p in separate.parameters()) p.requires_grad = true;
        var ids = RandomIds(2, 9, seed: 1);

        var a = fused.Forward(ids);
        var b = separate.Forward(ids);
        Assert.True(MaxDiff(a, b) < 1e-5, $"logits differ by {MaxDiff(a, b)}");
        Loss(a).backward();
        Loss(b).backward();
        var theirs = separate.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in fused.named_parameters())
        {
            Assert.NotNull(p.grad);
            double diff = MaxDiff(p.grad!, theirs[name].grad!);
            Assert.True(diff < 1e-6, $"{name}: gradients differ by {diff}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Inference_weights_give_the_same_logits_and_are_freed(bool tied)
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama(tied: tied));
        model.ComputeDType = ScalarType.BFloat16;
        var ids = RandomIds(2, 7, seed: 2);
        using var noGrad = torch.no_grad();
        var plain = model.Forward(ids);
        long live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Tensor cached;
        using (model.UseInferenceWeights())
        using (model.UseInferenceWeights())   // scopes nest
            cached = model.Forward(ids).DetachFromDisposeScope();
        Assert.True(Same(plain, cached));
        cached.Dispose();
        Assert.Equal(live, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void Forwards_that_record_gradients_ignore_the_inference_copies()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        var ids = RandomIds(1, 5, seed: 4);
        using var weights = model.UseInferenceWeights();
        Loss(model.Forward(ids)).backward();
        Assert.All(model.parameters(), p => Assert.NotNull(p.grad));
    }

    [Fact]
    public void Rotary_tables_grow_past_their_first_length()
    {
        using var scope = NewDisposeScope();
        var small = Llama();   // 64 positions: the tables start with 64 rows
        var large = ModelConfig.Parse(LlamaJson().Also(j => j["max_position_embeddings"] = 256), "test-config.json");
        using var a = RandomCausal(small, seed: 5);
        using var b = RandomCausal(large, seed: 5);
        var ids = RandomIds(1, 6, seed: 5);
        var positions = torch.arange(100, 106, dtype: ScalarType.Int64).unsqueeze(0);
        Assert.True(Same(a.Forward(ids, positionIds: positions), b.Forward(ids, positionIds: positions)));
    }

    [Fact]
    public void Bf16_generation_with_inference_copies_matches_greedy_decoding_without_them()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        model.ComputeDType = ScalarType.BFloat16;
        var prompt = RandomIds(2, 4, seed: 6);
        var settings = new GenerationSettings { MaxNewTokens = 6, Temperature = 0, EosTokenIds = [], PadTokenId = 0 };
        using var result = TextGenerator.Generate(model, prompt, null, settings);
        // Greedy decoding by hand through the same cache, no inference copies.
        using var noGrad = torch.no_grad();
        using var cache = model.NewCache(2, 10);
        var ids = prompt;
        var logits = model.Forward(prompt, cache: cache);
        for (int i = 0; i < settings.MaxNewTokens; i++)
        {
            var next = logits.select(1, -1).argmax(-1).unsqueeze(1);
            ids = torch.cat([ids, next], 1);
            if (i < settings.MaxNewTokens - 1) logits = model.Forward(next, cache: cache);
        }
        Assert.True(Same(result.Sequences, ids));
    }

    [Fact]
    public void One_token_decode_under_bf16_attends_in_fp32_close_to_the_full_pass()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama());
        model.ComputeDType = ScalarType.BFloat16;
        using var noGrad = torch.no_grad();
        var ids = RandomIds(2, 6, seed: 8);
        using var cache = model.NewCache(2, 6);
        Assert.Equal(ScalarType.BFloat16, model.Forward(ids.narrow(1, 0, 5), cache: cache).dtype);
        var last = model.Forward(ids.narrow(1, 5, 1), cache: cache);
        var full = model.Forward(ids).narrow(1, 5, 1);
        Assert.Equal(ScalarType.BFloat16, last.dtype);
        Assert.True(MaxDiff(full, last) < 0.05 * MaxDiff(full, torch.zeros_like(full)), $"differs by {MaxDiff(full, last)}");
    }
}

internal static class JsonExtensions
{
    public static System.Text.Json.Nodes.JsonObject Also(this System.Text.Json.Nodes.JsonObject json, Action<System.Text.Json.Nodes.JsonObject> change)
    {
        change(json);
        return json;
    }
}
