using System.Text.Json;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Cli.Tests;

public class CliTests(PresetFolder preset) : IClassFixture<PresetFolder>
{
    [Fact]
    public void Create_preset_writes_a_loadable_model_with_the_built_in_tokenizer()
    {
        using var model = ModelLoader.Load(preset.Model);
        var tokenizer = TextTokenizer.Load(preset.Model);
        Assert.Equal(TextTokenizer.BuiltIn().VocabSize, model.Config.VocabSize);
        Assert.Equal(tokenizer.VocabSize, model.Config.VocabSize);
        Assert.Equal(256, model.Config.HiddenSize);
        Assert.Equal([(long)tokenizer.EosId!.Value], model.Config.EosTokenIds);
    }

    [Fact]
    public void Inspect_reports_sizes_parameter_counts_dtypes_tokenizer_and_template()
    {
        var run = CliRun.Of("model", "inspect", preset.Model, "--json");
        Assert.Equal(0, run.ExitCode);
        var json = JsonDocument.Parse(run.Out).RootElement;
        using var model = ModelLoader.Load(preset.Model);
        var counts = model.CountParameters();
        Assert.Equal("LlamaForCausalLM", json.GetProperty("architecture").GetString());
        Assert.Equal("llama", json.GetProperty("model_type").GetString());
        Assert.Equal(256, json.GetProperty("hidden_size").GetInt32());
        Assert.Equal(4, json.GetProperty("num_hidden_layers").GetInt32());
        Assert.Equal(4, json.GetProperty("num_attention_heads").GetInt32());
        Assert.Equal(4, json.GetProperty("num_key_value_heads").GetInt32());
        Assert.Equal(model.Config.VocabSize, json.GetProperty("vocab_size").GetInt32());
        Assert.Equal(counts.Total, json.GetProperty("parameters").GetProperty("total").GetInt64());
        Assert.Equal(counts.NonEmbedding, json.GetProperty("parameters").GetProperty("non_embedding").GetInt64());
        Assert.Equal(model.state_dict().Count, json.GetProperty("stored_dtypes").GetProperty("F32").GetInt64());
        var tokenizer = json.GetProperty("tokenizer");
        Assert.Equal("ByteLevelBpe", tokenizer.GetProperty("kind").GetString());
        Assert.Equal("<|endoftext|>", tokenizer.GetProperty("eos").GetProperty("token").GetString());
        Assert.True(tokenizer.GetProperty("pad_is_eos").GetBoolean());
        Assert.Equal("stackllama", json.GetProperty("default_template").GetString());

        var text = CliRun.Of("model", "inspect", preset.Model);
        Assert.Equal(0, text.ExitCode);
        Assert.Contains($"{counts.Total:N0} total, {counts.NonEmbedding:N0} non-embedding", text.Out);
        Assert.Contains("F32 (", text.Out);
    }

    [Fact]
    public void Inspect_reports_bf16_storage()
    {
        var folder = Path.Combine(preset.Root, "bf16");
        Assert.Equal(0, CliRun.Of("model", "create-preset", "tiny", folder, "--dtype", "bf16").ExitCode);
        var json = JsonDocument.Parse(CliRun.Of("model", "inspect", folder, "--json").Out).RootElement;
        Assert.True(json.GetProperty("stored_dtypes").TryGetProperty("BF16", out _));
        Assert.False(json.GetProperty("stored_dtypes").TryGetProperty("F32", out _));
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public void Logits_json_has_one_vocab_row_per_id_equal_to_the_engine_forward(string dtype)
    {
        long[] ids = [1, 7, 42, 300];
        var run = CliRun.Of("model", "logits", preset.Model, "--ids", string.Join(",", ids), "--dtype", dtype);
        Assert.Equal(0, run.ExitCode);
        var json = JsonDocument.Parse(run.Out).RootElement;
        Assert.Equal(ids, json.GetProperty("ids").EnumerateArray().Select(e => e.GetInt64()));
        var rows = json.GetProperty("logits").EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetSingle()).ToArray()).ToArray();

        using var model = ModelLoader.Load(preset.Model, dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32);
        using var noGrad = torch.no_grad();
        using var input = torch.tensor(ids, [1, ids.Length]);
        using var logits = model.Forward(input);
        using var expected = logits.squeeze(0).to(ScalarType.Float32).contiguous();
        Assert.Equal(ids.Length, rows.Length);
        Assert.All(rows, r => Assert.Equal(model.Config.VocabSize, r.Length));
        // Printed with round-trip precision: the values are the same floats.
        Assert.Equal(expected.data<float>().ToArray(), rows.SelectMany(r => r));
    }

    [Fact]
    public void Generate_with_a_seed_is_deterministic_and_seeds_differ()
    {
        string[] Args(string seed) => ["generate", preset.Model, "--prompt", "What is the sum", "--max-new-tokens", "24",
            "--temperature", "1.5", "--seed", seed, "--template", "none"];
        var a = CliRun.Of(Args("1"));
        var b = CliRun.Of(Args("1"));
        var c = CliRun.Of(Args("2"));
        Assert.Equal(0, a.ExitCode);
        Assert.Equal(a.Out, b.Out);
        Assert.NotEqual(a.Out, c.Out);
        Assert.Contains("tokens/s", a.Error);
        Assert.Contains("template none", a.Error);
    }

    [Fact]
    public void Greedy_generate_prints_what_the_engine_generates()
    {
        var run = CliRun.Of("generate", preset.Model, "--prompt", "What is", "--max-new-tokens", "10", "--temperature", "0", "--template", "stackllama");
        Assert.Equal(0, run.ExitCode);
        using var model = ModelLoader.Load(preset.Model);
        var tokenizer = TextTokenizer.Load(preset.Model);
        var expected = RlhfStudio.Engine.Generation.TextGenerator.GenerateText(model, tokenizer, ["What is"],
            new() { Temperature = 0, MaxNewTokens = 10 }, PromptTemplates.StackLlama);
        Assert.Equal(expected[0] + Environment.NewLine, run.Out);
    }

    [Theory]
    [InlineData(2, "is not a token id", "model", "logits", "{model}", "--ids", "1,x")]
    [InlineData(2, "outside the vocabulary", "model", "logits", "{model}", "--ids", "1,99999")]
    [InlineData(2, "--ids is required", "model", "logits", "{model}")]
    [InlineData(2, "--dtype must be fp32 or bf16", "model", "logits", "{model}", "--ids", "1", "--dtype", "fp16")]
    [InlineData(1, "model folder not found", "model", "inspect", "{root}/missing")]
    [InlineData(2, "unknown option --frob", "model", "inspect", "{model}", "--frob")]
    [InlineData(2, "takes 1 argument", "model", "inspect")]
    [InlineData(2, "unknown command", "modle", "inspect")]
    [InlineData(2, "unknown preset", "model", "create-preset", "huge", "{root}/huge")]
    [InlineData(1, "already exists", "model", "create-preset", "tiny", "{model}")]
    [InlineData(2, "--temperature must be a number", "generate", "{model}", "--prompt", "x", "--temperature", "hot")]
    [InlineData(2, "top_p must be in (0, 1]", "generate", "{model}", "--prompt", "x", "--top-p", "2")]
    [InlineData(2, "--prompt is required", "generate", "{model}")]
    [InlineData(2, "unknown template", "generate", "{model}", "--prompt", "x", "--template", "alpaca")]
    public void Errors_are_one_clear_line_with_a_non_zero_exit_code(int code, string message, params string[] args)
    {
        var run = CliRun.Of(args.Select(a => a.Replace("{model}", preset.Model).Replace("{root}", preset.Root)).ToArray());
        Assert.Equal(code, run.ExitCode);
        Assert.Contains(message, run.Error);
        Assert.StartsWith("error: ", run.Error);
        Assert.DoesNotContain("   at ", run.Error);   // no stack trace
        Assert.Equal("", run.Out);
    }

    [Fact]
    public void A_pickle_checkpoint_is_refused_with_the_reason()
    {
        var pickle = Path.Combine(preset.Root, "pytorch_model.bin");
        File.WriteAllBytes(pickle, [0x80, 0x02]);
        var run = CliRun.Of("model", "inspect", pickle);
        Assert.Equal(1, run.ExitCode);
        Assert.Contains("pickle", run.Error);
        Assert.DoesNotContain("   at ", run.Error);
    }

    [Fact]
    public void A_folder_with_broken_weights_fails_cleanly()
    {
        var folder = Path.Combine(preset.Root, "broken");
        Directory.CreateDirectory(folder);
        File.Copy(Path.Combine(preset.Model, "config.json"), Path.Combine(folder, "config.json"));
        File.WriteAllBytes(Path.Combine(folder, "model.safetensors"), [1, 2, 3]);
        var run = CliRun.Of("model", "logits", folder, "--ids", "1,2");
        Assert.Equal(1, run.ExitCode);
        Assert.Contains("model.safetensors", run.Error);
        Assert.DoesNotContain("   at ", run.Error);
    }

    [Fact]
    public void Help_lists_every_command()
    {
        var run = CliRun.Of("--help");
        Assert.Equal(0, run.ExitCode);
        foreach (var c in CliApp.Commands) Assert.Contains(c.Name, run.Out);
    }

    [Fact]
    public void Help_after_a_command_or_a_group_describes_only_those()
    {
        var one = CliRun.Of("eval", "kl", "--help");
        Assert.Equal(0, one.ExitCode);
        Assert.Contains("eval kl [--model X] [--reference X]", one.Out);
        Assert.Contains("objective/kl", one.Out);
        Assert.DoesNotContain("train sft", one.Out);

        var group = CliRun.Of("train", "-h");
        Assert.Equal(0, group.ExitCode);
        foreach (var method in new[] { "sft", "reward", "ppo", "rloo", "dpo" }) Assert.Contains($"train {method} [--config X]", group.Out);
        Assert.DoesNotContain("eval arithmetic", group.Out);

        var unknown = CliRun.Of("fly", "--help");
        Assert.Equal(2, unknown.ExitCode);
        Assert.Contains("unknown command \"fly\"", unknown.Error);
    }
}
