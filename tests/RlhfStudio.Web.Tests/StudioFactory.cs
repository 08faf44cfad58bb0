using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;

namespace RlhfStudio.Web.Tests;

/// <summary>The studio hosted in-process on a fresh data folder, with a small matmul benchmark so that
/// tests measuring the machine stay quick.</summary>
public sealed class StudioFactory : WebApplicationFactory<Program>
{
    public string DataFolder { get; } = Path.Combine(Path.GetTempPath(), "rlhfstudio-tests", Guid.NewGuid().ToString("N"));

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Development");
        builder.UseSetting("Studio:DataFolder", DataFolder);
        builder.UseSetting("Studio:ModelRoots:0", Path.Combine(DataFolder, "models"));
        builder.UseSetting("Studio:DatasetRoots:0", Path.Combine(DataFolder, "datasets"));
        builder.UseSetting("Studio:BenchmarkMatrixSize", "256");
    }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(DataFolder, recursive: true); } catch (IOException) { }
    }
}
