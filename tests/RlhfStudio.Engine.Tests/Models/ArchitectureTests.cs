using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.Models;

public class ArchitectureTests
{
    public static TheoryData<string> Families => new() { "llama-gqa", "llama-tied-mha", "qwen2", "gpt2" };

    private static CausalLanguageModel Make(string family) => family switch
    {
        "llama-gqa" => RandomCausal(Llama(kvHeads: 2)),
        "llama-tied-mha" => RandomCausal(Llama(tied: true, kvHeads: 4)),
        "qwen2" => RandomCausal(Llama("qwen2", kvHeads: 1)),
        "gpt2" => RandomCausal(Gpt2()),
        _ => throw new ArgumentException(family),
    };

    [Fact]
    public void Llama_state_dict_keys_are_the_hugging_face_names()
    {
        using var scope = NewDisposeScope();
        using var model = new CausalLanguageModel(Llama(layers: 1));
        var keys = model.state_dict().Keys.Order(StringComparer.Ordinal).ToList();
        string[] expected =
        [
            "lm_head.weight",
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.mlp.up_proj.weight",
            "model.layers.0.post_attention_layernorm.weight",
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.v_proj.weight",
            "model.norm.weight",
        ];
        Assert.Equal(expected, keys);
        Assert.Equal([16L, 32L], model.state_dict()["model.layers.0.self_attn.k_proj.weight"].shape);   // 2 kv heads x head_dim 8
    }

    [Fact]
    public void Qwen2_has_qkv_biases_and_no_output_bias_and_tied_models_have_no_lm_head()
    {
        using var scope = NewDisposeScope();
        using var qwen = new CausalLanguageModel(Llama("qwen2", layers: 1));
        var keys = qwen.state_dict().Keys.ToHashSet();
        Assert.Contains("model.layers.0.self_attn.q_proj.bias", keys);
        Assert.Contains("model.layers.0.self_attn.k_proj.bias", keys);
        Assert.Contains("model.layers.0.self_attn.v_proj.bias", keys);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", keys);
        using var tied = new CausalLanguageModel(Llama(tied: true, layers: 1));
        Assert.DoesNotContain("lm_head.weight", tied.state_dict().Keys);
    }

    [Fact]
    public void Gpt2_state_dict_keys_are_the_hugging_face_names()
    {
        using var scope = NewDisposeScope();
        using var model = new CausalLanguageModel(Gpt2(layers: 1));
        var sd = model.state_dict();
        string[] expected =
        [
            "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_attn.weight",
            "transformer.h.0.attn.c_proj.bias", "transformer.h.0.attn.c_proj.weight",
            "transformer.h.0.ln_1.bias", "transformer.h.0.ln_1.weight",
            "transformer.h.0.ln_2.bias", "transformer.h.0.ln_2.weight",
            "transformer.h.0.mlp.c_fc.bias", "transformer.h.0.mlp.c_fc.weight",
            "transformer.h.0.mlp.c_proj.bias", "transformer.h.0.mlp.c_proj.weight",
            "transformer.ln_f.bias", "transformer.ln_f.weight",
            "transformer.wpe.weight", "transformer.wte.weight",
        ];
        Assert.Equal(expected, sd.Keys.Order(StringComparer.Ordinal));
        Assert.Equal([32L, 96L], sd["transformer.h.0.attn.c_attn.weight"].shape);   // Conv1D: [in, out]
        Assert.Equal([32L, 128L], sd["transformer.h.0.mlp.c_fc.weight"].shape);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Changing_a_token_does_not_change_earlier_logits(string family)
    {
        using var scope = NewDisposeScope();
        using var model = Make(family);
        using var noGrad = no_grad();
        var ids = RandomIds(1, 8, seed: 1);
        var changed = ids.clone();
        changed[0, 5] = (ids[0, 5] + 1) % Vocab;
        var a = model.Forward(ids);
        var b = model.Forward(changed);
        Assert.True(MaxDiff(a.narrow(1, 0, 5), b.narrow(1, 0, 5)) < 1e-6);
        Assert.True(MaxDiff(a.narrow(1, 5, 3), b.narrow(1, 5, 3)) > 1e-4);   // and later positions do see it
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Left_padded_batch_gives_the_unpadded_logits(string family)
    {
        using var scope = NewDisposeScope();
        using var model = Make(family);
        using var noGrad = no_grad();
        var longRow = RandomIds(1, 7, seed: 2);
        var shortRow = RandomIds(1, 4, seed: 3);
        var batch = torch.cat([longRow, torch.cat([torch.zeros(1, 3, dtype: ScalarType.Int64), shortRow], 1)], 0);   // pad id 0 on the left
        var mask = torch.ones(2, 7, dtype: ScalarType.Int64);
        mask[1, TensorIndex.Slice(0, 3)] = 0;

        var padded = model.Forward(batch, mask);
        Assert.False(padded.isnan().any().item<bool>());
        Assert.True(MaxDiff(padded[0].unsqueeze(0), model.Forward(longRow)) < 1e-5);
        Assert.True(MaxDiff(padded[1].narrow(0, 3, 4).unsqueeze(0), model.Forward(shortRow)) < 1e-5);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Incremental_decoding_with_the_cache_equals_a_full_forward(string family)
    {
        using var scope = NewDisposeScope();
        using var model = Make(family);
        using var noGrad = no_grad();
        // Left-padded batch: prefill 5 positions, then 3 single-token steps with the mask growing by one each time.
        var ids = RandomIds(2, 8, seed: 4);
        ids[1, TensorIndex.Slice(0, 2)] = 0;
        var mask = torch.ones(2, 8, dtype: ScalarType.Int64);
        mask[1, TensorIndex.Slice(0, 2)] = 0;
        var full = model.Forward(ids, mask);

        using var cache = model.NewCache(batch: 2, maxLength: 10);
        var steps = new List<Tensor> { model.Forward(ids.narrow(1, 0, 5), mask.narrow(1, 0, 5), cache: cache) };
        for (int t = 5; t < 8; t++)
            steps.Add(model.Forward(ids.narrow(1, t, 1), mask.narrow(1, 0, t + 1), cache: cache));
        Assert.Equal(8, cache.Length);
        var incremental = torch.cat(steps, 1);
        Assert.True(MaxDiff(incremental[0].unsqueeze(0), full[0].unsqueeze(0)) < 1e-5);
        Assert.True(MaxDiff(incremental[1].narrow(0, 2, 6), full[1].narrow(0, 2, 6)) < 1e-5);

        // Without a mask: a 2-token chunk after a prefill (explicit offset-causal mask) and a 1-token step.
        cache.Reset();
        var row = ids.narrow(0, 0, 1).expand(2, 8).contiguous();
        var plain = model.Forward(row);
        var parts = new List<Tensor>
        {
            model.Forward(row.narrow(1, 0, 5), cache: cache),
            model.Forward(row.narrow(1, 5, 2), cache: cache),
            model.Forward(row.narrow(1, 7, 1), cache: cache),
        };
        Assert.True(MaxDiff(torch.cat(parts, 1), plain) < 1e-5);
    }

    [Fact]
    public void Cache_overflow_and_wrong_mask_shape_are_refused()
    {
        using var scope = NewDisposeScope();
        using var model = RandomCausal(Llama(layers: 1));
        using var noGrad = no_grad();
        using var cache = model.NewCache(1, 4);
        Assert.Throws<ArgumentException>(() => model.Forward(RandomIds(1, 5, 1), cache: cache));
        Assert.Throws<ArgumentException>(() => model.Forward(RandomIds(1, 3, 1), torch.ones(1, 4, dtype: ScalarType.Int64)));
    }

    [Fact]
    public void Score_pooling_picks_the_last_non_pad_token_with_left_and_right_padding()
    {
        using var scope = NewDisposeScope();
        const long pad = 0;
        var ids = Ids(
            [5, 6, 7, 0, 0],    // right padded: last real at 2
            [0, 0, 5, 6, 7],    // left padded: last real at 4
            [5, 6, 7, 8, 9]);   // no padding: 4
        Assert.Equal([2L, 4L, 4L], ScoreModel.LastNonPadIndex(ids, pad).data<long>().ToArray());
        Assert.Equal([4L, 4L, 4L], ScoreModel.LastNonPadIndex(ids, null).data<long>().ToArray());

        var scores = torch.arange(15, dtype: ScalarType.Float32).view(3, 5, 1) * torch.tensor(new float[] { 1, -1 });  // (3, 5, 2)
        var pooled = ScoreModel.Pool(scores, ids, pad);
        Assert.Equal([2f, -2f, 9f, -9f, 14f, -14f], pooled.data<float>().ToArray());
    }

    [Fact]
    public void Score_model_gives_per_token_scores_and_shares_the_trunk_layout()
    {
        using var scope = NewDisposeScope();
        using var model = Randomize(new ScoreModel(Llama(layers: 1) with { NumLabels = 1 }), 3);
        using var noGrad = no_grad();
        var scores = model.Forward(RandomIds(2, 6, 5));
        Assert.Equal([2L, 6L, 1L], scores.shape);
        Assert.Contains("score.weight", model.state_dict().Keys);
        Assert.DoesNotContain("lm_head.weight", model.state_dict().Keys);
        Assert.Equal([1L, 32L], model.state_dict()["score.weight"].shape);
    }

    [Fact]
    public void Llama3_rope_scaling_matches_a_hand_computed_value()
    {
        using var scope = NewDisposeScope();
        // head_dim 8, theta 10000: inv_freq = 1, 0.1, 0.01, 0.001; wavelengths 2pi/f = 6.28, 62.8, 628, 6283.
        // factor 8, low 1, high 4, original 1024: low_freq_wavelen 1024, high_freq_wavelen 256.
        //   i=0,1: wavelen < 256 -> unchanged.  i=3: 6283 > 1024 -> 0.001 / 8.
        //   i=2: medium: smooth = (1024 / 628.3185 - 1) / 3 = 0.2099...; (1 - s) * 0.01 / 8 + s * 0.01.
        var scaling = new RopeScaling(Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 1024);
        var f = Rotary.InverseFrequencies(8, 10000, scaling).data<float>().ToArray();
        double smooth = (1024 / (2 * Math.PI / 0.01) - 1) / 3;
        double[] expected = [1, 0.1, (1 - smooth) * 0.01 / 8 + smooth * 0.01, 0.001 / 8];
        for (int i = 0; i < 4; i++)
            Assert.True(Math.Abs(f[i] - expected[i]) <= 1e-6 * Math.Abs(expected[i]) + 1e-9, $"inv_freq[{i}] = {f[i]}, expected {expected[i]}");
        var plain = Rotary.InverseFrequencies(8, 10000, null).data<float>().ToArray();
        Assert.Equal(0.01f, plain[2], 6);
    }

    [Fact]
    public void Parameter_counts_split_embedding_and_trainable()
    {
        using var scope = NewDisposeScope();
        using var model = ModelPresets.Create("tiny", vocabSize: 1000, seed: 1);
        var counts = model.CountParameters();
        long perLayer = 4 * 256 * 256 + 3 * 256 * 688 + 2 * 256;
        Assert.Equal(1000L * 256, counts.Embedding);
        Assert.Equal(4 * perLayer + 256, counts.NonEmbedding);
        Assert.Equal(counts.Total, counts.Trainable);
        foreach (var p in model.Trunk.parameters()) p.requires_grad = false;
        Assert.Equal(0L, model.CountParameters().Trainable);
    }

    [Fact]
    public void Presets_are_seeded_and_initialised_like_hugging_face()
    {
        using var scope = NewDisposeScope();
        using var a = ModelPresets.Create("tiny", vocabSize: 100, seed: 5);
        using var b = ModelPresets.Create("tiny", vocabSize: 100, seed: 5);
        using var c = ModelPresets.Create("tiny", vocabSize: 100, seed: 6);
        var wa = a.state_dict()["model.layers.0.self_attn.q_proj.weight"];
        Assert.Equal(0.0, MaxDiff(wa, b.state_dict()["model.layers.0.self_attn.q_proj.weight"]));
        Assert.True(MaxDiff(wa, c.state_dict()["model.layers.0.self_attn.q_proj.weight"]) > 0);
        Assert.InRange(wa.std().ToSingle(), 0.018f, 0.022f);
        Assert.True(a.state_dict()["model.norm.weight"].eq(1).all().item<bool>());
        Assert.Throws<ArgumentException>(() => ModelPresets.Config("huge", 100));
        var small = ModelPresets.Config("small", 32000);
        Assert.Equal(512, small.HiddenSize);
    }
}
