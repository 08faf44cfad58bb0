namespace RlhfStudio.Engine.Jobs;

/// <summary>Checkpoint folders (<c>checkpoint-&lt;step&gt;/</c> in a run's output directory) are written into a
/// temporary folder, a manifest with file hashes is written last, and the folder is then renamed into
/// place. A folder is trusted only when its manifest is present: a crash mid-save never leaves a
/// checkpoint that looks valid but is not. Hosts use this to pick the checkpoint to resume from.</summary>
public static class CheckpointFolder
{
    public const string ManifestFile = "checkpoint_manifest.json";
    public const string Prefix = "checkpoint-";

    public static string NameFor(long step) => $"{Prefix}{step}";

    public static bool IsComplete(string path) => Directory.Exists(path) && File.Exists(Path.Combine(path, ManifestFile));
}
