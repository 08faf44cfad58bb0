using System.Text.Json.Nodes;
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Adapters.AdapterTestKit;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.Adapters;

public class LoraFilesTests
{
    private static readonly LoraConfig QV = new() { Rank = 4, Alpha = 8, Dropout = 0.05, TargetModules = ["q_proj", "v_proj"], BaseModelNameOrPath = "org/tiny-llama" };

    private static JsonObject ReadConfig(string folder) => (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "adapter_config.json")))!;

    [Fact]
    public void Save_writes_peft_key_names_and_load_reproduces_the_outputs()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Llama());
        Lora.Apply(model, QV, seed: 3);
        RandomizeAdapters(model, 4);
        model.eval();
        var ids = RandomIds(2, 7, seed: 1);
        var expected = model.Forward(ids);
        Lora.Save(model, dir.Path);

        using (var file = SafeTensorsFile.Open(dir["adapter_model.safetensors"]))
        {
            var keys = file.Tensors.Keys.Order(StringComparer.Ordinal).ToList();
            Assert.Equal(8, keys.Count);
            Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", keys);
            Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", keys);
            Assert.Contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", keys);
            Assert.All(keys, k => Assert.DoesNotContain("default", k));
            Assert.Equal([4L, 32L], file.Tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].Shape);
            Assert.Equal([16L, 4L], file.Tensors["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"].Shape);
            Assert.Equal("pt", file.Metadata["format"]);
        }

        using var fresh = RandomCausal(Llama());   // same base weights (same seed), no adapters
        var result = Lora.Load(fresh, dir.Path);
        fresh.eval();
        Assert.True(Same(expected, fresh.Forward(ids)));
        Assert.Equal(0, result.Report.Trainable);   // PEFT's from_pretrained default: inference only
        Assert.Equal(QV.Dropout, Lora.ConfigOf(fresh)!.Dropout);

        using var trainable = RandomCausal(Llama());
        Assert.Equal(Lora.Load(trainable, dir.Path, trainable: true).AdapterParameters, Freezing.Report(trainable).Trainable);
    }

    [Fact]
    public void Adapter_config_has_the_peft_fields()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Llama());
        Lora.Apply(model, QV);
        Lora.Save(model, dir.Path);
        var json = ReadConfig(dir.Path);
        Assert.Equal("LORA", (string)json["peft_type"]!);
        Assert.Equal("CAUSAL_LM", (string)json["task_type"]!);
        Assert.Equal(4, (int)json["r"]!);
        Assert.Equal(8.0, (double)json["lora_alpha"]!);
        Assert.Equal(0.05, (double)json["lora_dropout"]!);
        Assert.Equal("none", (string)json["bias"]!);
        Assert.False((bool)json["fan_in_fan_out"]!);
        Assert.Equal("org/tiny-llama", (string)json["base_model_name_or_path"]!);
        Assert.Equal(["q_proj", "v_proj"], json["target_modules"]!.AsArray().Select(n => (string)n!));
        Assert.Null(json["modules_to_save"]);
        Assert.False((bool)json["use_rslora"]!);
        Assert.False((bool)json["use_dora"]!);
    }

    [Fact]
    public void Gpt2_adapters_save_with_fan_in_fan_out_and_all_linear_resolved_to_names()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Gpt2());
        Lora.Apply(model, new LoraConfig { Rank = 2, TargetModules = [LoraConfig.AllLinear] });
        RandomizeAdapters(model, 4);
        Lora.Save(model, dir.Path);
        var json = ReadConfig(dir.Path);
        Assert.True((bool)json["fan_in_fan_out"]!);
        Assert.Equal(["c_attn", "c_fc", "c_proj"], json["target_modules"]!.AsArray().Select(n => (string)n!));
        using (var file = SafeTensorsFile.Open(dir["adapter_model.safetensors"]))
            Assert.Contains("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", file.Tensors.Keys);

        using var fresh = RandomCausal(Gpt2());
        Lora.Load(fresh, dir.Path);
        var ids = RandomIds(1, 5, seed: 2);
        Assert.True(Same(model.Forward(ids), fresh.Forward(ids)));
    }

    [Fact]
    public void Score_model_saves_the_trained_head_under_peft_key_and_seq_cls_task()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        var config = Llama() with { NumLabels = 1 };
        using var model = Randomize(new ScoreModel(config), 3);
        Lora.Apply(model, new LoraConfig { Rank = 2, TargetModules = ["q_proj"] });
        RandomizeAdapters(model, 4);
        using (torch.no_grad()) model.score.weight.mul_(2);   // "trained" head
        Lora.Save(model, dir.Path);
        var json = ReadConfig(dir.Path);
        Assert.Equal("SEQ_CLS", (string)json["task_type"]!);
        Assert.Equal(["score"], json["modules_to_save"]!.AsArray().Select(n => (string)n!));
        using (var file = SafeTensorsFile.Open(dir["adapter_model.safetensors"]))
        {
            Assert.Contains("base_model.model.score.weight", file.Tensors.Keys);
            Assert.Equal(5, file.Tensors.Count);   // 2 layers x (A, B) + score
        }

        using var fresh = Randomize(new ScoreModel(config), 3);
        Lora.Load(fresh, dir.Path);
        var ids = RandomIds(2, 6, seed: 1);
        Assert.True(Same(model.Forward(ids), fresh.Forward(ids)));

        using var causal = RandomCausal(Llama());
        var e = Assert.Throws<ModelLoadException>(() => Lora.Load(causal, dir.Path));
        Assert.Contains("SEQ_CLS", e.Message);
        Assert.Contains("adapter_config.json", e.Message);
    }

    [Fact]
    public void Load_errors_name_the_file_and_tensor_and_leave_the_model_unchanged()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Llama());
        Lora.Apply(model, QV);
        RandomizeAdapters(model, 4);
        Lora.Save(model, dir.Path);
        var tensors = new Dictionary<string, Tensor>();
        using (var file = SafeTensorsFile.Open(dir["adapter_model.safetensors"]))
            foreach (var name in file.Tensors.Keys) tensors[name] = file.Read(name);
        var ids = RandomIds(1, 5, seed: 2);

        void Expect(string problem, string tensor, Action<Dictionary<string, Tensor>> edit)
        {
            var edited = new Dictionary<string, Tensor>(tensors);
            edit(edited);
            SafeTensorsWriter.Write(dir["adapter_model.safetensors"], edited);
            using var target = RandomCausal(Llama());
            var before = target.Forward(ids);
            var e = Assert.Throws<ModelLoadException>(() => Lora.Load(target, dir.Path));
            Assert.Contains(problem, e.Message);
            Assert.Contains(tensor, e.Message);
            Assert.Contains("adapter_model.safetensors", e.Message);
            Assert.Null(Lora.ConfigOf(target));
            Assert.DoesNotContain(target.state_dict().Keys, k => k.Contains("lora_"));
            Assert.All(target.parameters(), p => Assert.True(p.requires_grad));
            Assert.True(Same(before, target.Forward(ids)));
        }

        const string b = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
        Expect("missing", b, d => d.Remove(b));
        Expect("shape", b, d => d[b] = torch.zeros(16, 3));
        Expect("unexpected", "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
            d => d["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"] = torch.zeros(4, 32));
    }

    [Fact]
    public void Config_errors_name_the_field()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Llama());
        Lora.Apply(model, QV);
        Lora.Save(model, dir.Path);
        var original = ReadConfig(dir.Path);

        void Expect(string field, Action<JsonObject> edit)
        {
            var json = (JsonObject)original.DeepClone();
            edit(json);
            File.WriteAllText(dir["adapter_config.json"], json.ToJsonString());
            using var target = RandomCausal(Llama());
            var e = Assert.Throws<ModelLoadException>(() => Lora.Load(target, dir.Path));
            Assert.Contains(field, e.Message);
            Assert.Contains("adapter_config.json", e.Message);
        }

        Expect("peft_type", j => j["peft_type"] = "IA3");
        Expect("use_dora", j => j["use_dora"] = true);
        Expect("target_modules", j => j["target_modules"] = ".*proj");
        Expect("c_attn", j => j["target_modules"] = new JsonArray("c_attn"));
        Expect("bias", j => j["bias"] = "all");
        Expect("r", j => j["r"] = 0);
    }

    [Fact]
    public void Save_merged_writes_a_plain_hf_folder_that_loads_as_the_adapted_model()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = RandomCausal(Llama());
        Lora.Apply(model, QV);
        RandomizeAdapters(model, 4);
        model.eval();
        var ids = RandomIds(2, 7, seed: 1);
        var expected = model.Forward(ids);
        var weightsBefore = model.HfWeights()["model.layers.0.self_attn.q_proj.weight"].clone();

        Assert.Throws<InvalidOperationException>(() => ModelSaver.Save(model, dir.Path));   // would silently drop the adapters
        Lora.SaveMerged(model, dir.Path);
        Assert.True(model.HasUnmergedAdapters);   // the model is as it was
        Assert.True(MaxDiff(weightsBefore, model.HfWeights()["model.layers.0.self_attn.q_proj.weight"]) < 1e-6);

        using var loaded = ModelLoader.Load(dir.Path);   // strict: a LoRA key in the file would be "unexpected"
        Assert.True(MaxDiff(expected, loaded.Forward(ids)) < 1e-5);
        using var plain = new CausalLanguageModel(Llama());
        Assert.Equal(plain.state_dict().Keys.Order(), loaded.state_dict().Keys.Order());
    }

    [Fact]
    public void Loading_base_weights_into_a_model_with_adapters_skips_the_adapter_tensors()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var source = RandomCausal(Llama(), seed: 9);
        ModelSaver.Save(source, dir.Path);
        using var model = RandomCausal(Llama(), seed: 1);
        Lora.Apply(model, QV);
        ModelLoader.LoadWeights(model, dir.Path);
        var ids = RandomIds(1, 5, seed: 2);
        Assert.True(Same(source.Forward(ids), model.Forward(ids)));   // B = 0: adapters add nothing
    }
}
