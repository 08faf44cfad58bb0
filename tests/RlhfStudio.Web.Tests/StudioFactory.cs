using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Tests;

/// <summary>The studio hosted in-process on a fresh data folder, with a small matmul benchmark so that
/// tests measuring the machine stay quick.</summary>
public class StudioFactory : WebApplicationFactory<Program>
{
    public string DataFolder { get; } = StudioProcess.NewDataFolder();

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Production");
        builder.UseSetting("Studio:DataFolder", DataFolder);
        builder.UseSetting("Studio:ModelRoots:0", Path.Combine(DataFolder, "models"));
        builder.UseSetting("Studio:DatasetRoots:0", Path.Combine(DataFolder, "datasets"));
        builder.UseSetting("Studio:BenchmarkMatrixSize", "256");
        if (Jobs is not null) builder.ConfigureTestServices(s => s.AddSingleton<JobFactory>(Jobs));
        foreach (var (key, value) in Settings) builder.UseSetting(key, value);
    }

    /// <summary>Extra configuration (e.g. "Studio:MaxUploadMegabytes").</summary>
    public Dictionary<string, string> Settings { get; init; } = [];

    /// <summary>Jobs the run service executes instead of the engine's (set before the host starts).</summary>
    public JobFactory? Jobs { get; init; }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        StudioProcess.DeleteDataFolder(DataFolder);
    }
}
