namespace RlhfStudio.Web;

/// <summary>The studio's settings (section "Studio" of appsettings.json). Relative paths are resolved
/// against the content root.</summary>
public sealed class StudioOptions
{
    public const string Section = "Studio";

    /// <summary>Folder of the SQLite database, uploaded datasets and run outputs.</summary>
    public string DataFolder { get; set; } = "data";
    /// <summary>Folders under which model paths may lie.</summary>
    public List<string> ModelRoots { get; set; } = [];
    /// <summary>Folders under which dataset paths may lie.</summary>
    public List<string> DatasetRoots { get; set; } = [];
    /// <summary>Runs executed at once (training saturates the CPU: default 1).</summary>
    public int MaxConcurrentRuns { get; set; } = 1;
    /// <summary>After a crash, restart a running run that had no checkpoint yet from the beginning (true)
    /// or mark it interrupted (false).</summary>
    public bool RestartInterruptedRuns { get; set; } = true;
    /// <summary>Largest dataset upload accepted.</summary>
    public long MaxUploadMegabytes { get; set; } = 2048;
    /// <summary>Access token required when the studio listens on a non-loopback address.</summary>
    public string? AccessToken { get; set; }
    /// <summary>Matrix size of the machine benchmark (n x n by n x n).</summary>
    public int BenchmarkMatrixSize { get; set; } = 2048;

    /// <summary>Absolute data folder.</summary>
    public string DataPath { get; private set; } = "";
    public string RunsPath => Path.Combine(DataPath, "runs");
    /// <summary>Where uploaded datasets are stored; always an allowed dataset root.</summary>
    public string UploadsPath => Path.Combine(DataPath, "uploads");
    /// <summary>Dataset roots plus the uploads folder.</summary>
    public IReadOnlyList<string> AllowedDatasetRoots => [.. DatasetRoots, UploadsPath];

    internal void Resolve(string contentRoot)
    {
        DataPath = Path.GetFullPath(Path.Combine(contentRoot, DataFolder));
        ModelRoots = ModelRoots.Select(r => Path.GetFullPath(Path.Combine(contentRoot, r))).ToList();
        DatasetRoots = DatasetRoots.Select(r => Path.GetFullPath(Path.Combine(contentRoot, r))).ToList();
    }
}
