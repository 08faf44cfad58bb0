using System.Diagnostics;
using Microsoft.Playwright;

namespace RlhfStudio.Web.Tests.Browser;

/// <summary>Debian's Chromium driven by Playwright through its executable path (Playwright never downloads
/// a browser here). Installs the <c>chromium</c> package when it is missing, so that the one test command
/// works on a fresh machine. Also starts one studio process for the browser tests to share.</summary>
public sealed class BrowserFixture : IAsyncLifetime
{
    public const string ChromiumPath = "/usr/bin/chromium";

    private IPlaywright? _playwright;
    public IBrowser Browser { get; private set; } = null!;
    public StudioProcess Studio { get; private set; } = null!;

    /// <summary>Where screenshots are written (looked at by people, not asserted on).</summary>
    public static string ScreenshotFolder { get; } = Path.Combine(AppContext.BaseDirectory, "screenshots");

    public async Task InitializeAsync()
    {
        EnsureChromium();
        Directory.CreateDirectory(ScreenshotFolder);
        Studio = await StudioProcess.StartAsync(settings: new Dictionary<string, string> { ["Studio:BenchmarkMatrixSize"] = "512" });
        _playwright = await Playwright.CreateAsync();
        Browser = await _playwright.Chromium.LaunchAsync(new()
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
        });
    }

    public async Task<IPage> NewPageAsync(int width = 1366, int height = 900)
    {
        var context = await Browser.NewContextAsync(new() { ViewportSize = new() { Width = width, Height = height }, BaseURL = Studio.BaseAddress.ToString() });
        return await context.NewPageAsync();
    }

    public async Task DisposeAsync()
    {
        if (Browser is not null) await Browser.DisposeAsync();
        _playwright?.Dispose();
        if (Studio is not null) await Studio.DisposeAsync();
    }

    private static void EnsureChromium()
    {
        if (File.Exists(ChromiumPath)) return;
        if (!OperatingSystem.IsLinux() || !File.Exists("/usr/bin/apt-get"))
            throw new InvalidOperationException($"browser tests need Chromium at {ChromiumPath}; install it with your package manager");
        Run("apt-get", "update -qq");
        Run("apt-get", "install -y -qq chromium");
        if (!File.Exists(ChromiumPath)) throw new InvalidOperationException($"apt-get installed chromium but {ChromiumPath} is missing");
    }

    private static void Run(string file, string args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["DEBIAN_FRONTEND"] = "noninteractive";
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(15 * 60 * 1000)) { p.Kill(true); throw new TimeoutException($"{file} {args} took over 15 minutes"); }
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {args} failed ({p.ExitCode}): {stderr.Result}");
    }
}

[CollectionDefinition(Name)]
public sealed class BrowserCollection : ICollectionFixture<BrowserFixture>
{
    public const string Name = "browser";
}
