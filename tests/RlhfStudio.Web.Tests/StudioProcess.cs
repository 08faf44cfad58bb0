using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace RlhfStudio.Web.Tests;

/// <summary>The studio started as a separate process (as a user starts it) on a free loopback port with
/// its own data folder: for browser tests and for tests that kill it mid-run.</summary>
public sealed class StudioProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    public Uri BaseAddress { get; }
    public string DataFolder { get; }
    public string Output { get { lock (_output) return _output.ToString(); } }

    /// <summary>True when the data folder was made by <see cref="StartAsync"/>: it is deleted on dispose.
    /// A folder passed in belongs to the caller (a test restarting the studio on it).</summary>
    private readonly bool _ownsDataFolder;

    private StudioProcess(Process process, Uri baseAddress, string dataFolder, bool ownsDataFolder)
    {
        _process = process;
        BaseAddress = baseAddress;
        DataFolder = dataFolder;
        _ownsDataFolder = ownsDataFolder;
    }

    /// <summary>A fresh folder under the temp path for one studio's data.</summary>
    public static string NewDataFolder() => Path.Combine(Path.GetTempPath(), "rlhfstudio-tests", Guid.NewGuid().ToString("N"));

    /// <summary>Deletes a test data folder, ignoring one already gone or still held open.</summary>
    public static void DeleteDataFolder(string folder)
    {
        try { Directory.Delete(folder, recursive: true); }
        catch (DirectoryNotFoundException) { }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>Starts the studio and waits until /healthz answers.</summary>
    public static async Task<StudioProcess> StartAsync(string? dataFolder = null, IDictionary<string, string>? settings = null, string bindHost = "127.0.0.1")
    {
        bool owns = dataFolder is null;
        dataFolder ??= NewDataFolder();
        int port = FreePort();
        var dll = WebAssemblyPath();
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = Path.GetDirectoryName(dll)!,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(dll);
        psi.ArgumentList.Add("--urls");
        psi.ArgumentList.Add($"http://{bindHost}:{port}");
        psi.ArgumentList.Add("--environment");
        psi.ArgumentList.Add("Production");
        psi.ArgumentList.Add($"--Studio:DataFolder={dataFolder}");
        psi.ArgumentList.Add($"--Studio:ModelRoots:0={Path.Combine(dataFolder, "models")}");
        psi.ArgumentList.Add($"--Studio:DatasetRoots:0={Path.Combine(dataFolder, "datasets")}");
        foreach (var (key, value) in settings ?? new Dictionary<string, string>()) psi.ArgumentList.Add($"--{key}={value}");

        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start the studio process");
        var studio = new StudioProcess(process, new Uri($"http://127.0.0.1:{port}/"), dataFolder, owns);
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (studio._output) studio._output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (studio._output) studio._output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        using var http = new HttpClient { BaseAddress = studio.BaseAddress, Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited) throw new InvalidOperationException($"the studio exited with {process.ExitCode}:\n{studio.Output}");
            try
            {
                if ((await http.GetAsync("healthz")).StatusCode == HttpStatusCode.OK) return studio;
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) { }
            await Task.Delay(250);
        }
        await studio.DisposeAsync();
        throw new TimeoutException($"the studio did not answer /healthz within 90 s:\n{studio.Output}");
    }

    /// <summary>Kills the process at once, as a crash would.</summary>
    public void Kill()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.WaitForExit(10_000);
    }

    public async ValueTask DisposeAsync()
    {
        Kill();
        _process.Dispose();
        if (_ownsDataFolder) DeleteDataFolder(DataFolder);
        await Task.Yield();
    }

    private static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>The web project's own build output (same configuration as this test assembly).</summary>
    private static string WebAssemblyPath()
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory);
        string configuration = here.Parent?.Name ?? "Debug"; // .../bin/<Configuration>/net10.0/
        var root = here;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "RlhfStudio.sln"))) root = root.Parent;
        if (root is null) throw new InvalidOperationException("RlhfStudio.sln not found above " + AppContext.BaseDirectory);
        var dll = Path.Combine(root.FullName, "src", "RlhfStudio.Web", "bin", configuration, "net10.0", "RlhfStudio.Web.dll");
        return File.Exists(dll) ? dll : throw new FileNotFoundException("build the solution first: web assembly not found", dll);
    }
}
