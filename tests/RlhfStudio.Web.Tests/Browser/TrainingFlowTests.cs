using System.Text.RegularExpressions;
using Microsoft.Playwright;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Tests.Browser;

/// <summary>The acceptance flow on the real engine: launch an SFT run on the built-in preset from the New run form,
/// watch its loss chart grow without reloading, open the generations of a checkpoint, launch a second run, compare
/// both, cancel the second one mid-run. Needs the engine's SFT trainer (the tiny preset, 20 steps of 8 examples, then a
/// 2,000-step run that is cancelled).</summary>
[Collection(BrowserCollection.Name)]
public class TrainingFlowTests(BrowserFixture fixture)
{
    [RequiresTrainerFact(TrainingMethod.Sft)]
    public async Task Launch_watch_inspect_compare_and_cancel_sft_runs()
    {
        var page = await fixture.NewPageAsync();
        long first = await LaunchAsync(page, "browser sft a", steps: 20);

        // The loss chart receives new points while the page stays open (no reload).
        await Assertions.Expect(page.Locator(".line-chart[data-title='train/loss'] path.line")).ToHaveCountAsync(1, new() { Timeout = 120_000 });
        int before = await PointCountAsync(page);
        await WaitUntilAsync(async () => await PointCountAsync(page) > before, TimeSpan.FromSeconds(120), "the chart received no new points");
        await Pages.ShotAsync(page, "run-live");

        // Wait for the end, then open the generations of a checkpoint from the checkpoints tab.
        await Assertions.Expect(page.Locator("#run-status")).ToHaveTextAsync("Completed", new() { Timeout = 900_000 });
        await page.GetByRole(AriaRole.Tab, new() { NameRegex = new Regex("^Checkpoints") }).ClickAsync();
        await Assertions.Expect(page.Locator("#checkpoints-table")).ToBeVisibleAsync();
        await page.Locator(".checkpoint-samples").First.ClickAsync();
        await Assertions.Expect(page.Locator("#samples-table")).ToBeVisibleAsync(new() { Timeout = 10_000 });
        Assert.True(await page.Locator("#samples-table tbody tr").CountAsync() > 0);
        await Pages.ShotAsync(page, "run-samples");
        await Pages.PhoneShotAsync(fixture, $"runs/{first}", "run");

        // The playground link of a checkpoint generates from it.
        await page.GetByRole(AriaRole.Tab, new() { NameRegex = new Regex("^Checkpoints") }).ClickAsync();
        var playgroundHref = await page.Locator(".checkpoint-playground").First.GetAttributeAsync("href");
        var playground = await fixture.NewPageAsync();
        await Pages.GotoAsync(playground, playgroundHref!.TrimStart('/'));
        await Pages.FillAsync(playground, "max-new-tokens", "12");
        await playground.Locator("#generate").ClickAsync();
        await Assertions.Expect(playground.Locator("#output-stats")).ToContainTextAsync("tokens in", new() { Timeout = 60_000 });
        await Pages.ShotAsync(playground, "playground-checkpoint");

        // A second run, then both side by side.
        long second = await LaunchAsync(page, "browser sft b", steps: 2000, learningRate: "0.0005");
        await Assertions.Expect(page.Locator(".line-chart[data-title='train/loss'] path.line")).ToHaveCountAsync(1, new() { Timeout = 120_000 });
        var compare = await fixture.NewPageAsync();
        await Pages.GotoAsync(compare, $"compare?runs={first},{second}");
        await Assertions.Expect(compare.Locator("#compare-charts .line-chart[data-title='train/loss'] path.line")).ToHaveCountAsync(2, new() { Timeout = 60_000 });
        await Pages.ShotAsync(compare, "compare");
        await compare.GetByRole(AriaRole.Tab, new() { Name = "Configuration" }).ClickAsync();
        await Assertions.Expect(compare.Locator("#config-diff")).ToContainTextAsync("training.learningRate");
        await Assertions.Expect(compare.Locator("#config-diff")).ToContainTextAsync("name");
        await Pages.ShotAsync(compare, "compare-config");
        await Pages.PhoneShotAsync(fixture, $"compare?runs={first},{second}", "compare-runs");

        // Cancel the second run from the runs table.
        var runs = await fixture.NewPageAsync();
        await Pages.GotoAsync(runs, "runs");
        await Pages.ShotAsync(runs, "runs-list");
        var row = runs.Locator("#runs-table tr").Filter(new() { HasText = "browser sft b" });
        var status = row.Locator(".status-chip");
        // 2,000 steps: the run is still going when the click lands, so this is a real mid-run cancel. The open run,
        // compare and runs pages keep rendering its curves meanwhile (a near-flat eval series once hung that render,
        // and with it the storing of the run's records: the status then stayed Running).
        await Assertions.Expect(status).ToHaveTextAsync("Running", new() { Timeout = 60_000 });
        await row.Locator(".action-cancel").ClickAsync();
        await Assertions.Expect(status).ToHaveTextAsync("Cancelled", new() { Timeout = 120_000 });
        await Pages.PhoneShotAsync(fixture, "runs", "runs-list");
    }

    /// <summary>Fills the quick-start SFT form with a short schedule and queues it; returns the new run's id.</summary>
    private static async Task<long> LaunchAsync(IPage page, string name, int steps, string? learningRate = null)
    {
        await Pages.GotoAsync(page, "runs/new");
        await Pages.FillAsync(page, "run-name", name);
        await Pages.FillAsync(page, "max-steps", steps.ToString());
        await Pages.FillAsync(page, "logging-steps", "1");
        // a short schedule on small batches: the machine is shared, and the point is the flow, not the model
        await Pages.FillAsync(page, "batch-size", "8");
        await Pages.FillAsync(page, "max-length", "64");
        await Pages.FillAsync(page, "eval-steps", "10");
        await Pages.FillAsync(page, "save-steps", "10");
        if (learningRate is not null) await Pages.FillAsync(page, "learning-rate", learningRate);
        await page.Locator("#queue-run").ClickAsync();
        await page.WaitForURLAsync(new Regex(@"/runs/\d+$"), new() { Timeout = 15_000 });
        await page.WaitForFunctionAsync("() => window.Blazor !== undefined");
        return long.Parse(Regex.Match(page.Url, @"/runs/(\d+)$").Groups[1].Value);
    }

    private static async Task<int> PointCountAsync(IPage page)
    {
        var text = await page.Locator("#point-count").InnerTextAsync();
        return int.Parse(Regex.Match(text.Replace(",", ""), @"\d+").Value);
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string failure)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (await condition()) return;
            await Task.Delay(500);
        }
        Assert.Fail(failure);
    }
}
