using System.Text.RegularExpressions;
using Microsoft.Playwright;

namespace RlhfStudio.Web.Tests.Browser;

/// <summary>Pages that work without any training method in the engine: the New run form (validation, JSON editor,
/// estimate, preview), the dataset statistics, the playground streaming from an untrained preset, and screenshots of
/// every page at desktop and phone widths.</summary>
[Collection(BrowserCollection.Name)]
public class StudioPageTests(BrowserFixture fixture)
{
    [Fact]
    public async Task New_run_form_validates_fields_live_and_the_json_editor_names_bad_fields()
    {
        var page = await fixture.NewPageAsync();
        await Pages.GotoAsync(page, "runs/new");
        await Assertions.Expect(page.Locator("#dataset-preview")).ToBeVisibleAsync(new() { Timeout = 30_000 });
        await Assertions.Expect(page.Locator("#step-estimate")).ToBeVisibleAsync();

        await Pages.FillAsync(page, "batch-size", "0");
        await Assertions.Expect(page.GetByText("must be between 1 and 4096").First).ToBeVisibleAsync(new() { Timeout = 10_000 });
        await Pages.FillAsync(page, "batch-size", "16");
        await Assertions.Expect(page.GetByText("between 1 and 4096")).ToHaveCountAsync(0);

        await page.GetByRole(AriaRole.Tab, new() { Name = "Advanced: JSON" }).ClickAsync();
        var editor = page.Locator("textarea#spec-json, #spec-json textarea").First;
        await Assertions.Expect(editor).ToHaveValueAsync(new Regex("\"method\": \"sft\""));
        await editor.FillAsync("{ \"method\": \"sft\", \"training\": { \"learningRate\": -1 }, \"nope\": 1 }");
        await Assertions.Expect(page.Locator("#json-errors")).ToContainTextAsync("nope", new() { Timeout = 10_000 });
        await editor.FillAsync("{ \"method\": \"sft\", \"training\": { \"learningRate\": -1 } }");
        await Assertions.Expect(page.Locator("#json-errors")).ToContainTextAsync("training.learningRate", new() { Timeout = 10_000 });
        await editor.FillAsync("{ \"method\": \"dpo\", \"beta\": 0.2 }");
        await Assertions.Expect(page.Locator("#json-valid")).ToContainTextAsync("DPO", new() { Timeout = 10_000 });

        await Pages.ShotAsync(page, "new-run-json");
    }

    [Fact]
    public async Task Playground_streams_tokens_from_an_untrained_preset()
    {
        var page = await fixture.NewPageAsync();
        await Pages.GotoAsync(page, "playground?preset=tiny&prompt=What%20is%202%20%2B%203%3F");
        await Pages.FillAsync(page, "max-new-tokens", "40");
        await Pages.FillAsync(page, "temperature", "1");
        await page.Locator("#generate").ClickAsync();
        await Assertions.Expect(page.Locator("#output-stats")).ToContainTextAsync("tokens in", new() { Timeout = 60_000 });
        Assert.Matches(@"\d+ tokens in", await page.Locator("#output-stats").InnerTextAsync());
        // The stats say what ran the decode steps (the fused kernels on AVX-512 CPUs, else libtorch with the reason).
        Assert.Matches(@"decode: (fused CPU kernels|libtorch ops \(.+\))", await page.Locator("#output-stats").InnerTextAsync());
        Assert.False(string.IsNullOrWhiteSpace(await page.Locator("#output").InnerTextAsync()));
        await Pages.ShotAsync(page, "playground");
        await Pages.PhoneShotAsync(fixture, "playground?preset=tiny", "playground");
    }

    [Fact]
    public async Task Datasets_page_shows_a_token_length_histogram_of_the_built_in_task()
    {
        var page = await fixture.NewPageAsync();
        await Pages.GotoAsync(page, "datasets");
        await page.Locator("#datasets-table a").GetByText("arithmetic-sft", new() { Exact = true }).ClickAsync();
        await Assertions.Expect(page.Locator("#dataset-preview")).ToBeVisibleAsync(new() { Timeout = 30_000 });
        await Assertions.Expect(page.Locator("#stats-summary")).ToContainTextAsync("training rows", new() { Timeout = 30_000 });
        Assert.True(await page.Locator("#dataset-stats rect.bar").CountAsync() > 0);
        await Pages.ShotAsync(page, "datasets");
        await Pages.PhoneShotAsync(fixture, "datasets", "datasets");
    }

    [Fact]
    public async Task Every_page_renders_at_desktop_and_phone_width()
    {
        foreach (var (url, name) in new[] { ("runs", "runs"), ("runs/new", "new-run"), ("compare", "compare"), ("models", "models"), ("playground", "playground-empty") })
        {
            var page = await fixture.NewPageAsync();
            await Pages.GotoAsync(page, url);
            await Pages.ShotAsync(page, name);
            await Pages.PhoneShotAsync(fixture, url, name);
            // nothing wider than the phone viewport (horizontal scrolling means something is cut off or overlaps)
            var phone = await fixture.NewPageAsync(390, 844);
            await Pages.GotoAsync(phone, url);
            var width = await phone.EvaluateAsync<int>("() => document.documentElement.scrollWidth");
            Assert.True(width <= 392, $"{url} is {width}px wide on a 390px phone");
            await page.Context.CloseAsync();
            await phone.Context.CloseAsync();
        }
    }
}

/// <summary>Helpers for driving the interactive (Blazor Server) pages.</summary>
internal static class Pages
{
    /// <summary>Opens a page and waits for its circuit, so that clicks reach the server.</summary>
    public static async Task GotoAsync(IPage page, string url)
    {
        await page.GotoAsync(url);
        await page.WaitForFunctionAsync("() => window.Blazor !== undefined");
        await page.WaitForLoadStateAsync(LoadState.NetworkIdle);
        await Task.Delay(700);
    }

    /// <summary>Types into the input with this id (MudBlazor puts the id on the input or on its wrapper) and commits it.</summary>
    public static async Task FillAsync(IPage page, string id, string value)
    {
        var input = page.Locator($"input#{id}, #{id} input, textarea#{id}").First;
        await input.FillAsync(value);
        await input.PressAsync("Tab");
        await Task.Delay(300);
    }

    public static Task ShotAsync(IPage page, string name) =>
        page.ScreenshotAsync(new() { Path = Path.Combine(BrowserFixture.ScreenshotFolder, $"{name}-desktop.png"), FullPage = true });

    public static async Task PhoneShotAsync(BrowserFixture fixture, string url, string name)
    {
        var phone = await fixture.NewPageAsync(390, 844);
        await GotoAsync(phone, url);
        await phone.ScreenshotAsync(new() { Path = Path.Combine(BrowserFixture.ScreenshotFolder, $"{name}-phone.png"), FullPage = true });
        await phone.Context.CloseAsync();
    }
}
