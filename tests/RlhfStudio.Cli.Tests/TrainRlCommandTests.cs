using RlhfStudio.Engine.IO;

namespace RlhfStudio.Cli.Tests;

public class TrainRlCommandTests(TinyTrainingFolder folder) : IClassFixture<TinyTrainingFolder>
{
    [Theory]
    [InlineData("ppo", ", \"numPpoEpochs\": 1, \"reward\": { \"builtin\": \"arithmetic\" }")]
    [InlineData("rloo", ", \"numPpoEpochs\": 1, \"rlooK\": 2, \"reward\": { \"builtin\": \"arithmetic\" }")]
    public void Rl_runs_from_the_command_line_with_rl_metrics_samples_and_a_final_model(string method, string extra)
    {
        var output = folder.Path2($"{method}-out");
        var run = CliRun.Of("train", method, "--config", folder.Config($"{method}.json", method, folder.Model, maxSteps: 2, extra: extra), "--output", output);
        Assert.True(run.ExitCode == 0, run.Error + run.Out);
        Assert.Contains("step 1/2  score ", run.Out);
        Assert.Contains(" kl 0 ", run.Out);            // the first rollout comes from the reference's own weights
        Assert.Contains("rollout samples at step 1", run.Out);
        Assert.Contains(" vs ", run.Out);              // each sample shows the reference's answer too
        var final = Path.Combine(output, "final");
        Assert.Contains($"final model in {final}", run.Out);
        using var model = ModelLoader.Load(final);
        Assert.Equal(2, model.Config.NumHiddenLayers);

        // The tuned policy's KL from its reference on responses it samples: 0 against itself, finite against the start.
        var self = CliRun.Of("eval", "kl", "--model", folder.Model, "--reference", folder.Model, "--prompts", "4", "--max-new-tokens", "6", "--json");
        Assert.True(self.ExitCode == 0, self.Error + self.Out);
        var selfJson = System.Text.Json.JsonDocument.Parse(self.Out).RootElement;
        Assert.Equal(0, selfJson.GetProperty("kl").GetDouble(), 9);
        Assert.Equal(4, selfJson.GetProperty("responses").GetInt32());
        var moved = CliRun.Of("eval", "kl", "--model", final, "--reference", folder.Model, "--prompts", "4", "--max-new-tokens", "6");
        Assert.True(moved.ExitCode == 0, moved.Error + moved.Out);
        Assert.Matches(@"^KL -?\d+\.\d{3} nats per response", moved.Out);
        // Prompts of the user's own data: the evaluation rows of a prompt-only JSONL file.
        var file = folder.Path2($"{method}-prompts.jsonl");
        File.WriteAllLines(file, Enumerable.Range(0, 40).Select(i => $"{{\"prompt\": \"What is {i} + {i + 1}?\"}}"));
        var own = CliRun.Of("eval", "kl", "--model", final, "--reference", folder.Model, "--dataset", file, "--prompts", "2", "--max-new-tokens", "4", "--json");
        Assert.True(own.ExitCode == 0, own.Error + own.Out);
        Assert.Equal(2, System.Text.Json.JsonDocument.Parse(own.Out).RootElement.GetProperty("responses").GetInt32());
        var badFile = CliRun.Of("eval", "kl", "--model", final, "--reference", folder.Model, "--dataset", folder.Path2("nowhere.jsonl"));
        Assert.Equal(1, badFile.ExitCode);
        Assert.Contains("nowhere.jsonl", badFile.Error);
        var missing = CliRun.Of("eval", "kl", "--model", final);
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("--reference", missing.Error);
    }
}
