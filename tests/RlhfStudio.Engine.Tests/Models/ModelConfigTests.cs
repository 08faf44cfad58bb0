using System.Text.Json.Nodes;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.Models;

public class ModelConfigTests
{
    private static ModelConfig Parse(string json) => ModelConfig.Parse((JsonObject)JsonNode.Parse(json)!, "/models/x/config.json");

    [Fact]
    public void Llama_config_reads_every_field_and_defaults_like_transformers()
    {
        var c = Parse("""
            {"model_type":"llama","architectures":["LlamaForCausalLM"],"vocab_size":128256,"hidden_size":2048,
             "intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":8,
             "max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":500000.0,
             "rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},
             "tie_word_embeddings":true,"attention_bias":false,"mlp_bias":false,"hidden_act":"silu",
             "bos_token_id":128000,"eos_token_id":[128001,128008,128009],"torch_dtype":"bfloat16"}
            """);
        Assert.Equal(ModelFamily.Llama, c.Family);
        Assert.Equal(64, c.HeadDim);
        Assert.Equal(8, c.NumKeyValueHeads);
        Assert.Equal(500000.0, c.RopeTheta);
        Assert.Equal(new RopeScaling(32, 1, 4, 8192), c.RopeScaling);
        Assert.Equal([128001L, 128008L, 128009L], c.EosTokenIds);
        Assert.Null(c.PadTokenId);
        Assert.Equal("bfloat16", c.TorchDtype);
        Assert.Equal(ModelHead.CausalLM, c.Head);

        var d = Parse("""{"model_type":"llama","vocab_size":10,"hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":4,"eos_token_id":2}""");
        Assert.Equal(4, d.NumKeyValueHeads);   // default: heads
        Assert.Equal(4, d.HeadDim);            // default: hidden / heads
        Assert.False(d.TieWordEmbeddings);
        Assert.Equal([2L], d.EosTokenIds);
        Assert.Equal(2, d.NumLabels);
    }

    [Fact]
    public void Qwen2_always_has_qkv_bias_and_llama_follows_attention_bias()
    {
        Assert.True(Llama("qwen2").QkvBias);
        Assert.False(Llama("qwen2").OutputBias);
        Assert.False(Llama("mistral").QkvBias);
        var json = LlamaJson();
        json["attention_bias"] = true;
        json["mlp_bias"] = true;
        var c = ModelConfig.Parse(json);
        Assert.True(c.QkvBias && c.OutputBias && c.MlpBias);
    }

    [Fact]
    public void Gpt2_names_are_read()
    {
        var c = Gpt2();
        Assert.Equal(ModelFamily.Gpt2, c.Family);
        Assert.Equal(32, c.HiddenSize);
        Assert.Equal(128, c.IntermediateSize);   // n_inner null -> 4 * n_embd
        Assert.Equal(64, c.MaxPositionEmbeddings);
        Assert.Equal(1e-5, c.NormEps);
        Assert.Equal("gelu_new", c.HiddenAct);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal([50L], c.EosTokenIds);
    }

    [Theory]
    [InlineData("""{"model_type":"mamba","hidden_size":4}""", "model_type \"mamba\" is not supported")]
    [InlineData("""{"hidden_size":4}""", "no \"model_type\"")]
    [InlineData("""{"model_type":"llama","vocab_size":10,"hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":4,"rope_scaling":{"type":"yarn","factor":4.0}}""", "rope_scaling type \"yarn\" is not supported")]
    [InlineData("""{"model_type":"llama","vocab_size":10,"hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":3}""", "not a multiple")]
    [InlineData("""{"model_type":"llama","vocab_size":10,"hidden_size":16,"intermediate_size":32,"num_hidden_layers":1}""", "no \"num_attention_heads\"")]
    [InlineData("""{"model_type":"llama","vocab_size":"ten","hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":4}""", "\"vocab_size\" should be an integer")]
    [InlineData("""{"model_type":"llama","vocab_size":10,"hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":4,"hidden_act":"swiglu9"}""", "activation \"swiglu9\"")]
    public void Bad_configs_are_refused_naming_the_file(string json, string problem)
    {
        var e = Assert.Throws<ModelLoadException>(() => Parse(json));
        Assert.Contains("/models/x/config.json", e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void Writing_back_keeps_unknown_keys_and_sets_the_head()
    {
        var c = Llama() with { NumLabels = 1 };
        var causal = c.ToJson(ModelHead.CausalLM);
        Assert.Equal("kept", causal["some_unknown_key"]!["nested"]!.GetValue<string>());
        Assert.Equal("LlamaForCausalLM", causal["architectures"]![0]!.GetValue<string>());

        var score = c.ToJson(ModelHead.SequenceClassification, TorchSharp.torch.ScalarType.BFloat16);
        Assert.Equal("LlamaForSequenceClassification", score["architectures"]![0]!.GetValue<string>());
        Assert.Equal("bfloat16", score["torch_dtype"]!.GetValue<string>());
        Assert.Single(score["id2label"]!.AsObject());
        var reparsed = ModelConfig.Parse(score);
        Assert.Equal(1, reparsed.NumLabels);
        Assert.Equal(ModelHead.SequenceClassification, reparsed.Head);
        Assert.Equal(c.HeadDim, reparsed.HeadDim);
        Assert.Equal(c.EosTokenIds, reparsed.EosTokenIds);

        // A preset has no raw JSON: everything needed to load it again is written.
        var preset = ModelPresets.Config("tiny", 500, bosTokenId: 1, eosTokenIds: [2], padTokenId: 0);
        var again = ModelConfig.Parse(preset.ToJson(ModelHead.CausalLM));
        Assert.Equal(preset.Architectures, again.Architectures);
        Assert.Equal(preset.EosTokenIds, again.EosTokenIds);
        // Every other typed field equal (record equality; lists compared above).
        Assert.Equal(preset with
        {
            Raw = again.Raw, Source = again.Source, TorchDtype = again.TorchDtype,
            Architectures = again.Architectures, EosTokenIds = again.EosTokenIds,
        }, again);
    }
}
