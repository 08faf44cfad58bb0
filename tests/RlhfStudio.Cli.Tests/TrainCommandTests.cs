using System.Text.Json;
using System.Text.Json.Nodes;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Cli.Tests;

/// <summary>A tiny Llama (hidden 32, 2 layers) with the built-in tokenizer, and run configs that train it for a few steps.</summary>
public sealed class TinyTrainingFolder : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "rlhf-cli-train-" + Guid.NewGuid().ToString("N"));
    public string Model => Path.Combine(Root, "tiny-model");

    public TinyTrainingFolder()
    {
        var tokenizer = TextTokenizer.BuiltIn();
        var config = ModelConfig.Parse(new JsonObject
        {
            ["model_type"] = "llama",
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["vocab_size"] = tokenizer.VocabSize,
            ["hidden_size"] = 32,
            ["intermediate_size"] = 48,
            ["num_hidden_layers"] = 2,
            ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2,
            ["max_position_embeddings"] = 256,
            ["tie_word_embeddings"] = true,
            ["eos_token_id"] = tokenizer.EosId,
            ["pad_token_id"] = tokenizer.PadId,
        }, "cli-test-config");
        using var model = new CausalLanguageModel(config);
        model.InitializeWeights(1);
        ModelSaver.Save(model, Model);
        tokenizer.Save(Model);
    }

    public string Path2(string name) => Path.Combine(Root, name);

    /// <summary>Writes a run spec; <paramref name="method"/> "sft" or "reward".</summary>
    public string Config(string name, string method, string modelPath, int maxSteps = 3, string? extra = null)
    {
        var path = Path2(name);
        File.WriteAllText(path, $$"""
            {
              "method": "{{method}}",
              "name": "{{name}}",
              "model": { "path": {{JsonSerializer.Serialize(modelPath)}} },
              "dataset": { "builtin": "arithmetic", "maxRows": 12 },
              "maxLength": 48,
              "training": { "learningRate": 1e-3, "maxSteps": {{maxSteps}}, "batchSize": 4 },
              "checkpoints": { "loggingSteps": 1, "evalSteps": 0, "saveSteps": 2, "keepLast": 0 },
              "sampling": { "maxNewTokens": 4 }{{extra}}
            }
            """);
        return path;
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}

public class TrainCommandTests(TinyTrainingFolder folder) : IClassFixture<TinyTrainingFolder>
{
    [Fact]
    public void Sft_then_reward_from_the_command_line_with_evaluations_and_resume()
    {
        var sftOut = folder.Path2("sft-out");
        var sft = CliRun.Of("train", "sft", "--config", folder.Config("sft.json", "sft", folder.Model, extra: ", \"numSamples\": 2"), "--output", sftOut);
        Assert.True(sft.ExitCode == 0, sft.Error + sft.Out);
        Assert.Contains("step 1/3  loss ", sft.Out);
        Assert.Contains("tok/s", sft.Out);
        Assert.Contains("eval step 3  loss ", sft.Out);
        Assert.Contains("exact_match", sft.Out);
        Assert.Contains("eval samples at step 3", sft.Out);
        Assert.Contains($"saved {Path.Combine(sftOut, "checkpoint-2")}", sft.Out);
        var final = Path.Combine(sftOut, "final");
        Assert.Contains($"final model in {final}", sft.Out);
        using (var model = ModelLoader.Load(final)) Assert.Equal(2, model.Config.NumHiddenLayers);

        // The same output folder again: refused without --resume, continued with --resume auto.
        var again = CliRun.Of("train", "sft", "--config", folder.Path2("sft.json"), "--output", sftOut);
        Assert.Equal(2, again.ExitCode);
        Assert.Contains("--resume auto", again.Error);
        var resumed = CliRun.Of("train", "sft", "--config", folder.Config("sft5.json", "sft", folder.Model, maxSteps: 5), "--output", sftOut,
            "--resume", "auto");
        Assert.True(resumed.ExitCode == 0, resumed.Error + resumed.Out);
        Assert.Contains("resuming from " + Path.Combine(sftOut, "checkpoint-3"), resumed.Out);
        Assert.Contains("step 4/5", resumed.Out);
        Assert.DoesNotContain("step 3/5", resumed.Out);

        var evalRun = CliRun.Of("eval", "arithmetic", "--model", final, "--prompts", "6", "--json");
        Assert.True(evalRun.ExitCode == 0, evalRun.Error);
        var evalJson = JsonDocument.Parse(evalRun.Out).RootElement;
        Assert.Equal(6, evalJson.GetProperty("prompts").GetInt32());
        Assert.InRange(evalJson.GetProperty("exact_match").GetDouble(), 0, 1);
        Assert.InRange(evalJson.GetProperty("true_score").GetDouble(), -1, 1);
        var evalText = CliRun.Of("eval", "arithmetic", "--model", final, "--prompts", "3", "--show", "2");
        Assert.Contains("exact match", evalText.Out);
        Assert.Contains("on 3 held-out questions", evalText.Out);

        var rewardOut = folder.Path2("reward-out");
        var reward = CliRun.Of("train", "reward", "--config", folder.Config("reward.json", "reward", final, maxSteps: 2), "--output", rewardOut);
        Assert.True(reward.ExitCode == 0, reward.Error + reward.Out);
        Assert.Contains("rewards/margins", reward.Out);
        Assert.Contains("eval step 2  loss ", reward.Out);
        Assert.Contains("accuracy", reward.Out);
        Assert.Contains("scores samples at step 2", reward.Out);
        var rewardModel = Path.Combine(rewardOut, "final");
        using (var model = ModelLoader.LoadScoreModel(rewardModel)) Assert.Equal(1, model.NumLabels);

        var rm = CliRun.Of("eval", "reward", "--model", rewardModel, "--pairs", "10", "--json");
        Assert.True(rm.ExitCode == 0, rm.Error);
        var rmJson = JsonDocument.Parse(rm.Out).RootElement;
        Assert.Equal(10, rmJson.GetProperty("pairs").GetInt32());
        Assert.InRange(rmJson.GetProperty("accuracy").GetDouble(), 0, 1);
        // A policy is not a reward model.
        var wrong = CliRun.Of("eval", "reward", "--model", final);
        Assert.Equal(1, wrong.ExitCode);
        Assert.Contains("not a reward model", wrong.Error);
    }

    [Fact]
    public void A_config_for_another_method_is_refused_with_the_command_to_use()
    {
        var run = CliRun.Of("train", "sft", "--config", folder.Config("reward-for-sft.json", "reward", folder.Model));
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("is a reward run spec", run.Error);
        Assert.Contains("train reward", run.Error);
    }

    [Fact]
    public void A_missing_model_folder_fails_with_exit_code_1_and_a_clear_message()
    {
        var run = CliRun.Of("train", "sft", "--config", folder.Config("missing.json", "sft", folder.Path2("no-such-model")), "--output", folder.Path2("missing-out"));
        Assert.Equal(1, run.ExitCode);
        Assert.Contains("error: Cannot load the model:", run.Error);
        Assert.Contains("model folder not found", run.Error);
    }

    [Fact]
    public void An_invalid_config_names_every_bad_field()
    {
        var path = folder.Path2("bad.json");
        File.WriteAllText(path, """{ "method": "sft", "maxLength": 2, "training": { "learningRate": -1 } }""");
        var run = CliRun.Of("train", "sft", "--config", path);
        Assert.Equal(1, run.ExitCode);
        Assert.Contains("maxLength: must be between 8 and 131072", run.Error);
        Assert.Contains("training.learningRate", run.Error);
    }
}
