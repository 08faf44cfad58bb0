using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Adapters.AdapterTestKit;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.Adapters;

public class FreezingTests
{
    [Fact]
    public void Frozen_lower_layers_and_embeddings_get_no_gradient_and_the_rest_do()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama(layers: 3));
        long total = model.parameters().Sum(p => p.numel());
        long embedding = 61 * 32;
        long perLayer = model.named_parameters().Where(x => x.name.StartsWith("model.layers.0.", StringComparison.Ordinal)).Sum(x => x.parameter.numel());
        var result = Freezing.FreezeLowerLayers(model, 2);
        Assert.Equal(embedding + 2 * perLayer, result.FrozenParameters);
        Assert.Equal(total - embedding - 2 * perLayer, result.Report.Trainable);
        Assert.Equal(total, result.Report.Total);

        NextTokenLoss(model, RandomIds(2, 6, seed: 1)).backward();
        foreach (var (name, p) in model.named_parameters())
        {
            bool frozen = name.StartsWith("model.layers.0.", StringComparison.Ordinal) || name.StartsWith("model.layers.1.", StringComparison.Ordinal)
                || name == "model.embed_tokens.weight";
            Assert.Equal(!frozen, p.requires_grad);
            if (frozen) Assert.Null(p.grad);
            else Assert.True(p.grad!.abs().max().item<float>() > 0, name);
        }
        Assert.Equal(model.parameters().Where(p => p.requires_grad).Sum(p => p.numel()), Freezing.TrainableParameters(model).Sum(p => p.numel()));
        Assert.Equal(result.Report.Trainable, Freezing.TrainableParameters(model).Sum(p => p.numel()));
    }

    [Fact]
    public void Gpt2_freezes_token_and_position_embeddings_and_a_tied_head_is_reported_frozen()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Gpt2(layers: 2));
        var result = Freezing.FreezeLowerLayers(model, 1);
        Assert.False(model.named_parameters().Single(x => x.name == "transformer.wpe.weight").parameter.requires_grad);
        Assert.False(model.named_parameters().Single(x => x.name == "transformer.h.0.attn.c_attn.weight").parameter.requires_grad);
        Assert.True(model.named_parameters().Single(x => x.name == "transformer.h.1.attn.c_attn.weight").parameter.requires_grad);
        Assert.Contains(result.Report.Notes, n => n.Contains("LM head is frozen"));

        using var kept = RandomCausal(Gpt2(layers: 2));
        var keptResult = Freezing.FreezeLowerLayers(kept, 1, freezeEmbeddings: false);
        Assert.True(kept.Trunk.TokenEmbedding.requires_grad);
        Assert.Empty(keptResult.Report.Notes);
        Assert.Throws<ArgumentOutOfRangeException>(() => Freezing.FreezeLowerLayers(kept, 3));
    }

    [Fact]
    public void Report_prints_like_peft()
    {
        var report = new TrainableParameterReport(1234, 56789, []);
        Assert.Equal("trainable params: 1,234 || all params: 56,789 || trainable%: 2.1730", report.ToString());
    }
}
