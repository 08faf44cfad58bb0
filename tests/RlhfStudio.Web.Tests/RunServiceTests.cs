using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using RlhfStudio.Data;
using RlhfStudio.Web.Hubs;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Tests;

/// <summary>The run queue, the record writer and the hub, with scripted jobs on the real SQLite file.</summary>
public class RunServiceTests : IAsyncLifetime
{
    private readonly ScriptedJobFactory _jobs = new(TimeSpan.FromMilliseconds(5));
    private StudioFactory _factory = null!;
    private HttpClient _client = null!;

    public Task InitializeAsync()
    {
        _factory = new StudioFactory { Jobs = _jobs };
        _client = _factory.CreateClient();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _factory.DisposeAsync();
    }

    private async Task<long> QueueAsync(string json)
    {
        var response = await _client.PostAsync("/api/runs", new StringContent(json, Encoding.UTF8, "application/json"));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetInt64();
    }

    private async Task<JsonElement> RunAsync(long id) => (await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{id}")).GetProperty("run");

    private async Task<JsonElement> WaitForStatusAsync(long id, params string[] statuses)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            var run = await RunAsync(id);
            if (statuses.Contains(run.GetProperty("status").GetString())) return run;
            await Task.Delay(50);
        }
        throw new TimeoutException($"run {id} did not reach {string.Join("/", statuses)}: {await RunAsync(id)}");
    }

    private async Task<List<(long Step, double Value)>> LossAsync(long id)
    {
        var metrics = await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{id}/metrics?names=train/loss&maxPoints=100000");
        return metrics.GetProperty("train/loss").EnumerateArray()
            .Select(p => (p.GetProperty("step").GetInt64(), p.GetProperty("value").GetDouble())).ToList();
    }

    private HubConnection Hub() => new HubConnectionBuilder()
        .WithUrl(new Uri(_factory.Server.BaseAddress, RunsHub.Path), o => o.HttpMessageHandlerFactory = _ => _factory.Server.CreateHandler())
        .Build();

    [Fact]
    public async Task A_page_handler_that_never_returns_does_not_stop_the_studio_storing_a_run()
    {
        // Stands for a page whose render hangs (an axis computation once looped forever on a near-flat series): the
        // records must still be committed and the run must still end, and other subscribers still hear about it.
        var release = new ManualResetEventSlim(); // not disposed: a late event may still reach the handler
        var events = _factory.Services.GetRequiredService<StudioEvents>();
        int stuck = 0;
        using var hung = events.Subscribe(_ => { Interlocked.Increment(ref stuck); release.Wait(); });
        var ended = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var watcher = events.Subscribe(e => { if (e is RunListChanged { Status: "Completed" or "Failed" } c) ended.TrySetResult(c.Status); });

        async Task StoreAndEnd()
        {
            long id = await QueueAsync("""{"method":"sft","training":{"maxSteps":30},"checkpoints":{"saveSteps":10}}""");
            var run = await WaitForStatusAsync(id, "Completed");
            Assert.Equal(30, run.GetProperty("step").GetInt64());
            Assert.Equal(Enumerable.Range(1, 30).Select(i => (long)i), (await LossAsync(id)).Select(p => p.Step));
            Assert.Equal("Completed", await ended.Task.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(1, Volatile.Read(ref stuck)); // it got its first event and is still inside it
        }
        // Bounded: with publishing that waits on handlers, the first publish (queueing the run) never returns.
        try { await Task.Run(StoreAndEnd).WaitAsync(TimeSpan.FromSeconds(90)); }
        finally { release.Set(); } // else the studio could not stop at the end of a failed test
    }

    [Fact]
    public async Task A_queued_run_executes_and_records_every_step_once_in_order()
    {
        long id = await QueueAsync("""{"method":"sft","training":{"maxSteps":40},"checkpoints":{"saveSteps":10}}""");
        var run = await WaitForStatusAsync(id, "Completed");
        Assert.Equal(40, run.GetProperty("step").GetInt64());
        Assert.EndsWith("final", run.GetProperty("finalModelPath").GetString());

        var loss = await LossAsync(id);
        Assert.Equal(Enumerable.Range(1, 40).Select(i => (long)i), loss.Select(p => p.Step));
        Assert.Equal(1.0 / 7, loss[6].Value, 12);
        var checkpoints = await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{id}/checkpoints");
        Assert.Equal([10L, 20L, 30L, 40L], checkpoints.EnumerateArray().Select(c => c.GetProperty("step").GetInt64()));
        var samples = await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{id}/samples");
        Assert.Equal(8, samples.GetArrayLength());
        var events = await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{id}/events");
        Assert.Contains(events.EnumerateArray(), e => e.GetProperty("message").GetString()!.StartsWith("Started sft run"));
    }

    [Fact]
    public async Task Live_points_arrive_in_order_batched_and_a_late_client_gets_history_then_live_without_gap_or_duplicate()
    {
        _jobs.StepTime = TimeSpan.FromMilliseconds(15);
        long id = await QueueAsync("""{"method":"sft","training":{"maxSteps":150},"checkpoints":{"saveSteps":0}}""");

        // early client: watches from the start and sees everything live
        await using var early = Hub();
        var earlyLive = new List<MetricPointDto>();
        int earlyMessages = 0;
        early.On<long, List<MetricPointDto>>(HubEvents.Metrics, (_, points) => { lock (earlyLive) { earlyLive.AddRange(points); earlyMessages++; } });
        await early.StartAsync();
        var earlyHistory = await early.InvokeAsync<RunHistory>("WatchRun", id, 100_000);

        await WaitUntilAsync(async () => (await RunAsync(id)).GetProperty("step").GetInt64() >= 60);

        // late client: joins mid-run
        await using var late = Hub();
        var lateLive = new List<MetricPointDto>();
        late.On<long, List<MetricPointDto>>(HubEvents.Metrics, (_, points) => { lock (lateLive) lateLive.AddRange(points); });
        await late.StartAsync();
        var lateHistory = await late.InvokeAsync<RunHistory>("WatchRun", id, 100_000);
        Assert.NotNull(lateHistory);
        Assert.True(lateHistory.Metrics["train/loss"].Count >= 50, "the late client's history should hold the steps done so far");

        await WaitForStatusAsync(id, "Completed");
        await Task.Delay(500); // the last batch's broadcast

        static List<long> Steps(IEnumerable<MetricPointDto> pts) => pts.Where(p => p.Name == "train/loss").Select(p => p.Step).ToList();
        lock (earlyLive)
        {
            var live = Steps(earlyLive);
            Assert.Equal(live.Order(), live); // in order
            Assert.Equal(live.Distinct().Count(), live.Count); // no duplicates in the stream itself
            var all = Steps(earlyHistory!.Metrics.GetValueOrDefault("train/loss") ?? []).Union(live).Order().ToList();
            Assert.Equal(Enumerable.Range(1, 150).Select(i => (long)i), all);
            // batched: far fewer messages than steps (150 steps x 2 metrics in ~2.5 s at ~4 batches/s)
            Assert.InRange(earlyMessages, 2, 40);
        }
        lock (lateLive)
        {
            var history = Steps(lateHistory.Metrics["train/loss"]);
            var live = Steps(lateLive);
            Assert.Equal(history.Order(), history);
            Assert.Equal(live.Order(), live);
            var union = history.Union(live).Order().ToList();
            Assert.Equal(Enumerable.Range(1, 150).Select(i => (long)i), union); // no gap
            Assert.True(live.Count > 0, "the late client received live points");
        }
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("condition not met in 60 s");
            await Task.Delay(25);
        }
    }

    [Fact]
    public async Task Cancelling_a_running_run_keeps_a_checkpoint_and_resume_continues_the_same_series()
    {
        _jobs.StepTime = TimeSpan.FromMilliseconds(20);
        long id = await QueueAsync("""{"method":"sft","training":{"maxSteps":100},"checkpoints":{"saveSteps":1000}}""");
        await WaitUntilAsync(async () => (await RunAsync(id)).GetProperty("step").GetInt64() >= 20);

        Assert.Equal(HttpStatusCode.Accepted, (await _client.PostAsync($"/api/runs/{id}/cancel", null)).StatusCode);
        await WaitForStatusAsync(id, "Cancelled");
        var checkpoints = await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{id}/checkpoints");
        var checkpoint = Assert.Single(checkpoints.EnumerateArray());
        long stoppedAt = checkpoint.GetProperty("step").GetInt64();
        Assert.True(stoppedAt >= 20 && stoppedAt < 100);
        Assert.True(File.Exists(Path.Combine(checkpoint.GetProperty("path").GetString()!, "checkpoint_manifest.json")));

        _jobs.StepTime = TimeSpan.FromMilliseconds(2);
        Assert.Equal(HttpStatusCode.Accepted, (await _client.PostAsync($"/api/runs/{id}/resume", null)).StatusCode);
        await WaitForStatusAsync(id, "Completed");
        var loss = await LossAsync(id);
        Assert.Equal(Enumerable.Range(1, 100).Select(i => (long)i), loss.Select(p => p.Step));
        var events = await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{id}/events");
        Assert.Contains(events.EnumerateArray(), e => e.GetProperty("message").GetString()!.StartsWith("Resuming from"));
    }

    [Fact]
    public async Task Pause_then_resume_completes_the_run()
    {
        _jobs.StepTime = TimeSpan.FromMilliseconds(20);
        long id = await QueueAsync("""{"method":"sft","training":{"maxSteps":60}}""");
        await WaitUntilAsync(async () => (await RunAsync(id)).GetProperty("step").GetInt64() >= 5);
        Assert.Equal(HttpStatusCode.Accepted, (await _client.PostAsync($"/api/runs/{id}/pause", null)).StatusCode);
        await WaitForStatusAsync(id, "Paused");
        Assert.Equal(HttpStatusCode.Conflict, (await _client.PostAsync($"/api/runs/{id}/pause", null)).StatusCode);
        _jobs.StepTime = TimeSpan.FromMilliseconds(1);
        await _client.PostAsync($"/api/runs/{id}/resume", null);
        await WaitForStatusAsync(id, "Completed");
        Assert.Equal(60, (await LossAsync(id)).Count);
    }

    [Fact]
    public async Task One_run_at_a_time_in_queue_order_and_queued_runs_can_be_reordered_or_cancelled()
    {
        _jobs.StepTime = TimeSpan.FromMilliseconds(30);
        long first = await QueueAsync("""{"method":"sft","training":{"maxSteps":30}}""");
        long second = await QueueAsync("""{"method":"sft","training":{"maxSteps":3}}""");
        long third = await QueueAsync("""{"method":"sft","training":{"maxSteps":3}}""");
        long fourth = await QueueAsync("""{"method":"sft","training":{"maxSteps":3}}""");
        await WaitForStatusAsync(first, "Running");
        Assert.Equal("Queued", (await RunAsync(second)).GetProperty("status").GetString());

        Assert.Equal(HttpStatusCode.NoContent, (await _client.PostAsync($"/api/runs/{third}/move?position=0", null)).StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, (await _client.PostAsync($"/api/runs/{fourth}/cancel", null)).StatusCode);
        await WaitForStatusAsync(second, "Completed");
        var thirdRun = await WaitForStatusAsync(third, "Completed");
        var secondRun = await RunAsync(second);
        Assert.True(thirdRun.GetProperty("startedAt").GetDateTimeOffset() < secondRun.GetProperty("startedAt").GetDateTimeOffset(),
            "the run moved to the front starts first");
        Assert.True((await RunAsync(first)).GetProperty("endedAt").GetDateTimeOffset() <= thirdRun.GetProperty("startedAt").GetDateTimeOffset(),
            "only one run at a time");
        Assert.Equal("Cancelled", (await RunAsync(fourth)).GetProperty("status").GetString());
        Assert.Empty(await LossAsync(fourth));
    }

    [Fact]
    public async Task A_pipeline_runs_its_stages_in_order_feeding_each_stage_the_previous_output()
    {
        var response = await _client.PostAsync("/api/runs/pipeline", new StringContent("""
            {"stages": [
              {"method":"sft","training":{"maxSteps":3}},
              {"method":"reward","model":{"stage":0},"training":{"maxSteps":3}},
              {"method":"ppo","model":{"stage":0},"reward":{"stage":1},"training":{"maxSteps":3,"batchSize":8}}
            ]}
            """, Encoding.UTF8, "application/json"));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var runs = (await response.Content.ReadFromJsonAsync<JsonElement>()).EnumerateArray().ToList();
        Assert.Equal(3, runs.Count);
        long sft = runs[0].GetProperty("id").GetInt64(), ppo = runs[2].GetProperty("id").GetInt64();
        var ppoRun = await WaitForStatusAsync(ppo, "Completed");
        Assert.Equal(runs[1].GetProperty("id").GetInt64(), ppoRun.GetProperty("dependsOnRunId").GetInt64());

        var sftRun = await RunAsync(sft);
        var events = await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{ppo}/events");
        Assert.Contains(events.EnumerateArray(), e => e.GetProperty("message").GetString() == $"model={sftRun.GetProperty("finalModelPath").GetString()}");
        var spec = (await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{ppo}")).GetProperty("spec");
        Assert.Equal(runs[1].GetProperty("id").GetInt64(), spec.GetProperty("reward").GetProperty("runId").GetInt64());
    }

    [Fact]
    public async Task A_stage_whose_upstream_was_cancelled_does_not_run()
    {
        _jobs.StepTime = TimeSpan.FromMilliseconds(50);
        var response = await _client.PostAsync("/api/runs/pipeline", new StringContent("""
            {"stages": [ {"method":"sft","training":{"maxSteps":200}}, {"method":"dpo","model":{"stage":0},"training":{"maxSteps":3}} ]}
            """, Encoding.UTF8, "application/json"));
        var runs = (await response.Content.ReadFromJsonAsync<JsonElement>()).EnumerateArray().Select(r => r.GetProperty("id").GetInt64()).ToList();
        await WaitForStatusAsync(runs[0], "Running");
        await _client.PostAsync($"/api/runs/{runs[0]}/cancel", null);
        var second = await WaitForStatusAsync(runs[1], "Cancelled");
        Assert.Contains("cancelled", second.GetProperty("error").GetString());
    }

    [Theory]
    [InlineData("""{"method":"sft","model":{"path":"../../../../etc"}}""", "model.path")]
    [InlineData("""{"method":"sft","model":{"path":"/etc"}}""", "model.path")]
    [InlineData("""{"method":"sft","dataset":{"path":"/etc/passwd"}}""", "dataset.path")]
    public async Task Paths_outside_the_allowed_roots_are_refused(string json, string field)
    {
        var response = await _client.PostAsync("/api/runs", new StringContent(json, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Contains("outside the allowed folders", body.GetProperty("errors").GetProperty(field)[0].GetString());
    }

    [Fact]
    public async Task A_symlink_inside_a_root_pointing_outside_is_refused()
    {
        var models = Path.Combine(_factory.DataFolder, "models");
        Directory.CreateDirectory(models);
        File.CreateSymbolicLink(Path.Combine(models, "escape"), "/etc");
        var response = await _client.PostAsync("/api/runs", new StringContent("""{"method":"sft","model":{"path":"MODELS/escape"}}""".Replace("MODELS", models), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);

        Directory.CreateDirectory(Path.Combine(models, "real"));
        var ok = await _client.PostAsync("/api/runs", new StringContent("""{"method":"sft","model":{"path":"MODELS/real"},"training":{"maxSteps":1}}""".Replace("MODELS", models), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, ok.StatusCode);
    }

    [Fact]
    public async Task Deleting_a_run_removes_its_records_and_on_request_its_files()
    {
        long id = await QueueAsync("""{"method":"sft","training":{"maxSteps":10},"checkpoints":{"saveSteps":5}}""");
        var run = await WaitForStatusAsync(id, "Completed");
        var folder = Path.Combine(_factory.DataFolder, "runs", id.ToString());
        Assert.True(Directory.Exists(folder));
        Assert.Equal(HttpStatusCode.NoContent, (await _client.DeleteAsync($"/api/runs/{id}?files=true")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _client.GetAsync($"/api/runs/{id}")).StatusCode);
        Assert.False(Directory.Exists(folder));
        using var scope = _factory.Services.CreateScope();
        var store = scope.ServiceProvider.GetRequiredService<MetricStore>();
        Assert.Empty(await store.SeriesNamesAsync(id));
    }

    [Fact]
    public async Task Metrics_export_as_csv_and_json()
    {
        long id = await QueueAsync("""{"method":"sft","training":{"maxSteps":5}}""");
        await WaitForStatusAsync(id, "Completed");
        var csv = await _client.GetStringAsync($"/api/runs/{id}/metrics.csv");
        var lines = csv.Trim().Split('\n');
        Assert.Equal("step,name,value,time_ms", lines[0]);
        Assert.Equal(11, lines.Length); // header + 5 steps x 2 metrics
        Assert.Contains(lines, l => l.StartsWith("4,train/loss,0.25,"));
        var json = await _client.GetFromJsonAsync<JsonElement>($"/api/runs/{id}/metrics.json");
        Assert.Equal(5, json.GetProperty("train/loss").GetArrayLength());
    }
}
