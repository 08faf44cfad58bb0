using System.Text.Json.Nodes;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.IO;

public class ModelFolderTests
{
    public static TheoryData<string, bool> Cases => new()
    {
        { "llama-gqa-untied", false },
        { "llama-tied", false },
        { "qwen2", false },
        { "mistral", true },
        { "gpt2", false },
        { "gpt2", true },
    };

    private static ModelConfig ConfigFor(string name) => name switch
    {
        "llama-gqa-untied" => Llama(kvHeads: 2),
        "llama-tied" => Llama(tied: true, kvHeads: 4),
        "qwen2" => Llama("qwen2", kvHeads: 1),
        "mistral" => Llama("mistral", kvHeads: 2),
        "gpt2" => Gpt2(),
        _ => throw new ArgumentException(name),
    };

    private static JsonObject ReadJson(string path) => (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;

    [Theory]
    [MemberData(nameof(Cases))]
    public void Save_then_load_gives_identical_logits(string name, bool sharded)
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(ConfigFor(name));
        using var noGrad = no_grad();
        ModelSaver.Save(model, dir.Path, maxShardBytes: sharded ? 8_000 : SafeTensorsWriter.DefaultMaxShardBytes);
        Assert.Equal(sharded, File.Exists(dir["model.safetensors.index.json"]));
        Assert.Equal(!sharded, File.Exists(dir["model.safetensors"]));

        using var loaded = ModelLoader.Load(dir.Path);
        var ids = RandomIds(2, 6, seed: 3);
        Assert.Equal(0.0, MaxDiff(model.Forward(ids), loaded.Forward(ids)));
        Assert.Equal(model.state_dict().Keys.Order(), loaded.state_dict().Keys.Order());
    }

    [Fact]
    public void Tied_checkpoint_omits_lm_head_and_config_is_written_back_with_unknown_keys()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Llama(tied: true));
        ModelSaver.Save(model, dir.Path);
        using (var file = SafeTensorsFile.Open(dir["model.safetensors"]))
        {
            Assert.DoesNotContain("lm_head.weight", file.Tensors.Keys);
            Assert.Contains("model.embed_tokens.weight", file.Tensors.Keys);
        }
        var json = ReadJson(dir["config.json"]);
        Assert.Equal("LlamaForCausalLM", json["architectures"]![0]!.GetValue<string>());
        Assert.Equal("kept", json["some_unknown_key"]!["nested"]!.GetValue<string>());
        Assert.Equal("float32", json["torch_dtype"]!.GetValue<string>());
        Assert.True(json["tie_word_embeddings"]!.GetValue<bool>());
    }

    [Fact]
    public void Bf16_checkpoint_loads_in_the_dtype_asked_for()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Llama(), dtype: ScalarType.BFloat16);
        using var noGrad = no_grad();
        ModelSaver.Save(model, dir.Path);
        Assert.Equal("bfloat16", ReadJson(dir["config.json"])["torch_dtype"]!.GetValue<string>());
        using (var file = SafeTensorsFile.Open(dir["model.safetensors"]))
            Assert.All(file.Tensors.Values, t => Assert.Equal("BF16", t.DTypeName));

        var ids = RandomIds(1, 5, seed: 4);
        using var asBf16 = ModelLoader.Load(dir.Path, ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, asBf16.DType);
        Assert.Equal(0.0, MaxDiff(model.Forward(ids), asBf16.Forward(ids)));

        using var asF32 = ModelLoader.Load(dir.Path, ScalarType.Float32);
        Assert.Equal(ScalarType.Float32, asF32.DType);
        foreach (var (key, t) in model.state_dict())
            Assert.True(Same(t.to(ScalarType.Float32), asF32.state_dict()[key]), key);

        // And an fp32 model saved as bf16 stores rounded weights.
        using var dir2 = new TempDir();
        using var f32 = RandomCausal(Llama());
        ModelSaver.Save(f32, dir2.Path, ScalarType.BFloat16);
        using var back = ModelLoader.Load(dir2.Path);
        var w = "model.layers.0.mlp.up_proj.weight";
        Assert.True(Same(f32.state_dict()[w].to(ScalarType.BFloat16).to(ScalarType.Float32), back.state_dict()[w]));
    }

    [Fact]
    public void Missing_unexpected_and_misshapen_tensors_are_named()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Llama());
        var weights = model.state_dict();
        var file = dir["model.safetensors"];
        Llama().Save(dir["config.json"], ModelHead.CausalLM);

        SafeTensorsWriter.Write(file, weights.Where(kv => kv.Key != "model.layers.1.mlp.up_proj.weight"));
        var missing = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir.Path).Dispose());
        Assert.Contains("model.layers.1.mlp.up_proj.weight", missing.Message);
        Assert.Contains("missing", missing.Message);

        SafeTensorsWriter.Write(file, weights.Append(new("model.layers.0.extra.weight", torch.zeros(2))));
        var unexpected = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir.Path).Dispose());
        Assert.Contains(file, unexpected.Message);
        Assert.Contains("model.layers.0.extra.weight", unexpected.Message);
        Assert.Contains("unexpected", unexpected.Message);

        SafeTensorsWriter.Write(file, weights.Select(kv => kv.Key == "model.norm.weight" ? new(kv.Key, torch.ones(31)) : kv));
        var shape = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir.Path).Dispose());
        Assert.Contains(file, shape.Message);
        Assert.Contains("model.norm.weight", shape.Message);
        Assert.Contains("[31]", shape.Message);
        Assert.Contains("[32]", shape.Message);
    }

    [Fact]
    public void Config_problems_name_the_config_file()
    {
        using var dir = new TempDir();
        var json = LlamaJson();
        json["model_type"] = "mamba";
        File.WriteAllText(dir["config.json"], json.ToJsonString());
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir.Path).Dispose());
        Assert.Contains(dir["config.json"], e.Message);
        Assert.Contains("\"mamba\"", e.Message);

        Assert.Contains("model folder not found", Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir["nowhere"]).Dispose()).Message);
        File.WriteAllText(dir["config.json"], "{ not json");
        Assert.Contains("not valid JSON", Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir.Path).Dispose()).Message);
    }

    [Fact]
    public void Folder_with_only_a_pickle_checkpoint_is_refused()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["config.json"], LlamaJson().ToJsonString());
        File.WriteAllBytes(dir["pytorch_model.bin"], [0x80, 0x02]);
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir.Path).Dispose());
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("pickle", e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir["pytorch_model.bin"]).Dispose());
    }

    [Fact]
    public void Original_gpt2_layout_without_prefix_and_with_mask_buffers_loads()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Gpt2());
        using var noGrad = no_grad();
        // openai-community/gpt2's file: keys without "transformer.", plus attn.bias / attn.masked_bias buffers.
        var weights = model.state_dict().Select(kv => new KeyValuePair<string, Tensor>(kv.Key["transformer.".Length..], kv.Value)).ToList();
        weights.Add(new("h.0.attn.bias", torch.ones(1, 1, 64, 64).tril()));
        weights.Add(new("h.0.attn.masked_bias", torch.tensor(-1e4f)));
        SafeTensorsWriter.Write(dir["model.safetensors"], weights);
        File.WriteAllText(dir["config.json"], Gpt2Json().ToJsonString());
        using var loaded = ModelLoader.Load(dir.Path);
        var ids = RandomIds(1, 5, seed: 9);
        Assert.Equal(0.0, MaxDiff(model.Forward(ids), loaded.Forward(ids)));
    }

    [Fact]
    public void Score_model_from_a_causal_folder_gets_a_fresh_head_and_round_trips_as_sequence_classification()
    {
        using var scope = NewDisposeScope();
        using var lmDir = new TempDir();
        using var rmDir = new TempDir();
        using var lm = RandomCausal(Llama());
        using var noGrad = no_grad();
        ModelSaver.Save(lm, lmDir.Path);
        File.WriteAllText(lmDir["tokenizer.json"], "{\"fake\": true}");
        File.WriteAllText(lmDir["tokenizer_config.json"], "{}");

        using var rm = ModelLoader.LoadScoreModel(lmDir.Path, seed: 1);
        Assert.Equal(1, rm.NumLabels);
        Assert.True(Same(lm.state_dict()["model.layers.1.self_attn.q_proj.weight"], rm.state_dict()["model.layers.1.self_attn.q_proj.weight"]));
        var std = rm.score.weight!.std().ToSingle();
        Assert.InRange(std, 0.01f, 0.03f);   // N(0, initializer_range)

        ModelSaver.Save(rm, rmDir.Path, copyTokenizerFilesFrom: lmDir.Path);
        Assert.True(File.Exists(rmDir["tokenizer.json"]));
        Assert.True(File.Exists(rmDir["tokenizer_config.json"]));
        var json = ReadJson(rmDir["config.json"]);
        Assert.Equal("LlamaForSequenceClassification", json["architectures"]![0]!.GetValue<string>());
        Assert.Equal("LABEL_0", json["id2label"]!["0"]!.GetValue<string>());
        using (var file = SafeTensorsFile.Open(rmDir["model.safetensors"]))
        {
            Assert.Contains("score.weight", file.Tensors.Keys);
            Assert.DoesNotContain("lm_head.weight", file.Tensors.Keys);
        }

        using var back = ModelLoader.LoadScoreModel(rmDir.Path);
        var ids = RandomIds(2, 5, seed: 2);
        Assert.Equal(0.0, MaxDiff(rm.Forward(ids), back.Forward(ids)));
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(rmDir.Path).Dispose());
        Assert.Contains("sequence-classification", e.Message);
        Assert.Throws<ModelLoadException>(() => ModelLoader.LoadScoreModel(rmDir.Path, numLabels: 3).Dispose());
    }

    [Fact]
    public void Gpt2_score_model_uses_the_transformer_prefix()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var gpt = RandomCausal(Gpt2());
        ModelSaver.Save(gpt, dir.Path);
        using var rm = ModelLoader.LoadScoreModel(dir.Path, numLabels: 2);
        Assert.Contains("score.weight", rm.state_dict().Keys);
        Assert.Contains("transformer.wte.weight", rm.state_dict().Keys);
        Assert.Equal("GPT2ForSequenceClassification", rm.Config.ArchitectureFor(rm.Head));
    }
}
