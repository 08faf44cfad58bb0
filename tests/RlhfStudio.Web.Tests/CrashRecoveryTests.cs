using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace RlhfStudio.Web.Tests;

/// <summary>The studio process is killed mid-run (as a crash would) and started again on the same data
/// folder: the run resumes from its last complete checkpoint and its stored metric series ends up with
/// every step exactly once, the steps re-run after the checkpoint replacing (with the same values, since
/// resume is exact) what was recorded before the crash.</summary>
public class CrashRecoveryTests
{
    private const int Steps = 40;

    [Fact]
    public async Task A_run_killed_mid_way_resumes_after_restart_without_gaps_or_duplicates()
    {
        var dataFolder = StudioProcess.NewDataFolder();
        try { await CrashAndResumeAsync(dataFolder); }
        finally { StudioProcess.DeleteDataFolder(dataFolder); }
    }

    private static async Task CrashAndResumeAsync(string dataFolder)
    {
        long runId;
        Dictionary<long, double> beforeCrash;
        long checkpointStep;
        await using (var first = await StudioProcess.StartAsync(dataFolder))
        {
            using var http = new HttpClient { BaseAddress = first.BaseAddress };
            var spec = $$"""
                {"method":"sft","name":"crash-test","model":{"preset":"tiny"},"dataset":{"builtin":"arithmetic"},"precision":"fp32",
                 "maxLength":64,"training":{"maxSteps":{{Steps}},"batchSize":4,"learningRate":0.001},
                 "checkpoints":{"loggingSteps":1,"evalSteps":0,"saveSteps":8,"keepLast":2},"numSamples":0}
                """;
            var created = await http.PostAsync("api/runs", new StringContent(spec, Encoding.UTF8, "application/json"));
            Assert.True(created.IsSuccessStatusCode, await created.Content.ReadAsStringAsync());
            runId = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetInt64();

            // wait until a checkpoint exists and a few more steps were recorded after it
            var deadline = DateTime.UtcNow.AddMinutes(5);
            while (true)
            {
                Assert.True(DateTime.UtcNow < deadline, "the run made no checkpoint in 5 minutes:\n" + first.Output);
                var run = (await http.GetFromJsonAsync<JsonElement>($"api/runs/{runId}")).GetProperty("run");
                Assert.NotEqual("Failed", run.GetProperty("status").GetString());
                var checkpoints = await http.GetFromJsonAsync<JsonElement>($"api/runs/{runId}/checkpoints");
                checkpointStep = checkpoints.GetArrayLength() > 0 ? checkpoints.EnumerateArray().Max(c => c.GetProperty("step").GetInt64()) : 0;
                var loss = await LossAsync(http, runId);
                if (checkpointStep > 0 && loss.Count > 0 && loss.Keys.Max() >= checkpointStep + 3 && loss.Keys.Max() < Steps)
                {
                    beforeCrash = loss;
                    break;
                }
                await Task.Delay(200);
            }
            first.Kill();
        }

        await using var second = await StudioProcess.StartAsync(dataFolder);
        using var http2 = new HttpClient { BaseAddress = second.BaseAddress };
        var end = DateTime.UtcNow.AddMinutes(5);
        JsonElement final;
        while (true)
        {
            final = (await http2.GetFromJsonAsync<JsonElement>($"api/runs/{runId}")).GetProperty("run");
            var status = final.GetProperty("status").GetString();
            Assert.True(status != "Failed", $"the resumed run failed: {final}\n{second.Output}");
            if (status == "Completed") break;
            Assert.True(DateTime.UtcNow < end, "the resumed run did not complete in 5 minutes:\n" + second.Output);
            await Task.Delay(250);
        }

        var after = await LossAsync(http2, runId);
        Assert.Equal(Enumerable.Range(1, Steps).Select(i => (long)i), after.Keys.Order()); // no gap, no duplicate
        foreach (var (step, value) in beforeCrash)
            Assert.True(Math.Abs(after[step] - value) <= 1e-4 * Math.Max(1, Math.Abs(value)),
                $"step {step}: {value} before the crash, {after[step]} after the resume");
        var events = await http2.GetFromJsonAsync<JsonElement>($"api/runs/{runId}/events");
        Assert.Contains(events.EnumerateArray(), e => e.GetProperty("code").GetString() == "restart"
            && e.GetProperty("message").GetString()!.Contains($"step {checkpointStep}"));
    }

    private static async Task<Dictionary<long, double>> LossAsync(HttpClient http, long runId)
    {
        var metrics = await http.GetFromJsonAsync<JsonElement>($"api/runs/{runId}/metrics?names=train/loss&maxPoints=100000");
        return metrics.TryGetProperty("train/loss", out var points)
            ? points.EnumerateArray().ToDictionary(p => p.GetProperty("step").GetInt64(), p => p.GetProperty("value").GetDouble())
            : [];
    }
}
