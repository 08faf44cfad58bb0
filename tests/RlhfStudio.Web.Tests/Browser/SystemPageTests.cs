using Microsoft.Playwright;

namespace RlhfStudio.Web.Tests.Browser;

[Collection(BrowserCollection.Name)]
public class SystemPageTests(BrowserFixture fixture)
{
    [Fact]
    public async Task Measure_now_streams_progress_and_shows_the_measured_figures()
    {
        var page = await fixture.NewPageAsync();
        await page.GotoAsync("system");
        // The page is interactive once Blazor's circuit is up; the button is enabled then.
        var button = page.Locator("#benchmark-start");
        await button.WaitForAsync();
        await page.WaitForFunctionAsync("() => window.Blazor !== undefined");
        await Task.Delay(500);
        await button.ClickAsync();

        var fp32 = page.Locator("#fp32-gflops");
        await fp32.WaitForAsync(new() { Timeout = 60_000 });
        await Assertions.Expect(page.Locator("#benchmark-progress")).ToHaveCountAsync(0, new() { Timeout = 60_000 });
        var fp32Text = await fp32.InnerTextAsync();
        var bf16Text = await page.Locator("#bf16-gflops").InnerTextAsync();
        Assert.Matches(@"^[\d,]+ GFLOP/s$", fp32Text);
        Assert.Matches(@"^[\d,]+ GFLOP/s$", bf16Text);
        Assert.True(double.Parse(fp32Text.Split(' ')[0].Replace(",", "")) > 0);
        Assert.Contains("0.107.0", await page.Locator("#runtime-table").InnerTextAsync());

        await page.ScreenshotAsync(new() { Path = Path.Combine(BrowserFixture.ScreenshotFolder, "system-desktop.png"), FullPage = true });

        var phone = await fixture.NewPageAsync(390, 844);
        await phone.GotoAsync("system");
        await phone.Locator("#fp32-gflops").WaitForAsync();
        await phone.ScreenshotAsync(new() { Path = Path.Combine(BrowserFixture.ScreenshotFolder, "system-phone.png"), FullPage = true });
    }
}
