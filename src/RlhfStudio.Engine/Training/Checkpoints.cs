using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Training;

/// <summary>One file of a checkpoint: its path relative to the checkpoint folder ('/'-separated), size and SHA-256.</summary>
public sealed record ManifestEntry(string Path, long Size, string Sha256);

/// <summary><c>checkpoint_manifest.json</c>: written last, it vouches for every other file of the folder.</summary>
public sealed record CheckpointManifest(int Format, long Step, DateTimeOffset Created, IReadOnlyList<ManifestEntry> Files);

/// <summary>A checkpoint whose manifest, sizes and hashes were verified.</summary>
public sealed record VerifiedCheckpoint(string Path, long Step, TrainerState State);

/// <summary>Writing, verifying, finding and pruning <c>checkpoint-&lt;step&gt;/</c> folders (see <see cref="CheckpointFolder"/>).
/// A checkpoint is written into <c>checkpoint-&lt;step&gt;.tmp-&lt;guid&gt;/</c>; every file is flushed to disk and hashed;
/// the manifest is written last; then the folder is renamed into place. A crash at any point leaves either no
/// <c>checkpoint-&lt;step&gt;</c> folder or a complete one.</summary>
public static class Checkpoints
{
    private const string TempMarker = ".tmp-";
    private const string OldMarker = ".old-";

    /// <summary>Writes checkpoint <paramref name="step"/> under <paramref name="outputDirectory"/>:
    /// <paramref name="writeContents"/> fills the temporary folder it is given, then the manifest is added and the
    /// folder renamed to <c>checkpoint-&lt;step&gt;</c> (replacing an older folder of that name only once the new one is
    /// complete). Returns the final path. On failure the temporary folder is removed and the exception rethrown.</summary>
    public static string Write(string outputDirectory, long step, Action<string> writeContents)
    {
        Directory.CreateDirectory(outputDirectory);
        var final = Path.Combine(outputDirectory, CheckpointFolder.NameFor(step));
        var temp = final + TempMarker + Guid.NewGuid().ToString("N");
        try
        {
            Directory.CreateDirectory(temp);
            writeContents(temp);
            var manifest = new CheckpointManifest(1, step, DateTimeOffset.UtcNow, HashFiles(temp));
            var manifestTemp = Path.Combine(temp, CheckpointFolder.ManifestFile + ".partial");
            using (var stream = new FileStream(manifestTemp, FileMode.CreateNew, FileAccess.Write))
            {
                JsonSerializer.Serialize(stream, manifest, CheckpointJson.Options);
                stream.Flush(flushToDisk: true);
            }
            File.Move(manifestTemp, Path.Combine(temp, CheckpointFolder.ManifestFile));
            Publish(temp, final);
            return final;
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    // Moves the finished folder into place. An existing folder of the same name (a re-run of the same step after a
    // resume from an earlier checkpoint) is moved aside first and deleted only after the new one is in place.
    private static void Publish(string temp, string final)
    {
        if (!Directory.Exists(final))
        {
            Directory.Move(temp, final);
            return;
        }
        var old = final + OldMarker + Guid.NewGuid().ToString("N");
        Directory.Move(final, old);
        Directory.Move(temp, final);
        TryDelete(old);
    }

    // Every file except the manifest, flushed to disk (so the manifest never vouches for data still in the page
    // cache) and hashed. Directory entries are not fsynced: .NET has no API for it; the rename is atomic either way.
    private static List<ManifestEntry> HashFiles(string folder)
    {
        var entries = new List<ManifestEntry>();
        foreach (var file in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var relative = Path.GetRelativePath(folder, file).Replace(Path.DirectorySeparatorChar, '/');
            if (relative == CheckpointFolder.ManifestFile) continue;
            using var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
            stream.Flush(flushToDisk: true);
            var hash = SHA256.HashData(stream);
            entries.Add(new ManifestEntry(relative, stream.Length, Convert.ToHexStringLower(hash)));
        }
        return entries;
    }

    /// <summary>Reads the manifest of <paramref name="folder"/> and checks every file it lists (present, same size, same
    /// SHA-256). Throws <see cref="CheckpointException"/> naming the first problem.</summary>
    public static CheckpointManifest Verify(string folder)
    {
        var manifestPath = Path.Combine(folder, CheckpointFolder.ManifestFile);
        if (!File.Exists(manifestPath)) throw new CheckpointException($"{folder}: no {CheckpointFolder.ManifestFile} (the checkpoint was not completed)");
        CheckpointManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<CheckpointManifest>(File.ReadAllText(manifestPath), CheckpointJson.Options)
                ?? throw new CheckpointException($"{manifestPath}: empty manifest");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{manifestPath}: unreadable manifest: {e.Message}", e);
        }
        if (manifest.Files is null || manifest.Files.Count == 0) throw new CheckpointException($"{manifestPath}: the manifest lists no files");
        var root = Path.GetFullPath(folder) + Path.DirectorySeparatorChar;
        foreach (var entry in manifest.Files)
        {
            var path = Path.GetFullPath(Path.Combine(folder, entry.Path));
            if (!path.StartsWith(root, StringComparison.Ordinal))
                throw new CheckpointException($"{manifestPath}: lists \"{entry.Path}\", which is outside the checkpoint folder");
            if (!File.Exists(path)) throw new CheckpointException($"{path}: listed in the manifest but missing");
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            if (stream.Length != entry.Size)
                throw new CheckpointException($"{path}: {stream.Length} bytes, the manifest says {entry.Size} (truncated or overwritten)");
            var hash = Convert.ToHexStringLower(SHA256.HashData(stream));
            if (!string.Equals(hash, entry.Sha256, StringComparison.OrdinalIgnoreCase))
                throw new CheckpointException($"{path}: SHA-256 differs from the manifest (the file is corrupt)");
        }
        return manifest;
    }

    /// <summary>Checks <paramref name="folder"/> fully (manifest, sizes, hashes, trainer state) and reads its trainer state.</summary>
    public static VerifiedCheckpoint Open(string folder)
    {
        var manifest = Verify(folder);
        var state = TrainerState.Load(folder);
        if (state.GlobalStep != manifest.Step)
            throw new CheckpointException($"{folder}: trainer state is at step {state.GlobalStep} but the manifest says {manifest.Step}");
        return new VerifiedCheckpoint(folder, manifest.Step, state);
    }

    /// <summary>The newest checkpoint under <paramref name="outputDirectory"/> that verifies, or null. Temporary folders
    /// are never considered; folders without a manifest or with a file that fails verification are skipped, each with
    /// a warning event through <paramref name="reporter"/>.</summary>
    public static VerifiedCheckpoint? LoadLatestComplete(string outputDirectory, IRunReporter? reporter = null)
    {
        foreach (var (step, path) in Named(outputDirectory).OrderByDescending(c => c.Step))
        {
            try
            {
                return Open(path);
            }
            catch (CheckpointException e)
            {
                reporter?.Event(RunEvent.Warn("checkpoint-ignored", $"{CheckpointFolder.NameFor(step)} is not usable and was skipped: {e.Message}", step));
            }
        }
        return null;
    }

    /// <summary>Folders named exactly <c>checkpoint-&lt;step&gt;</c> that have a manifest (not verified), oldest first.</summary>
    public static IReadOnlyList<(long Step, string Path)> ListComplete(string outputDirectory) =>
        Named(outputDirectory).Where(c => CheckpointFolder.IsComplete(c.Path)).OrderBy(c => c.Step).ToList();

    private static IEnumerable<(long Step, string Path)> Named(string outputDirectory)
    {
        if (!Directory.Exists(outputDirectory)) yield break;
        foreach (var dir in Directory.EnumerateDirectories(outputDirectory, CheckpointFolder.Prefix + "*"))
        {
            var suffix = Path.GetFileName(dir)[CheckpointFolder.Prefix.Length..];
            if (suffix.Length > 0 && suffix.All(char.IsAsciiDigit)
                && long.TryParse(suffix, NumberStyles.None, CultureInfo.InvariantCulture, out long step))
                yield return (step, dir);
        }
    }

    /// <summary>Deletes complete checkpoints beyond the newest <paramref name="keepLast"/> (0 = keep all), always keeping the
    /// best one by the <see cref="TrainerState.Metric"/> each recorded. Returns the folders deleted.</summary>
    public static IReadOnlyList<string> ApplyRetention(string outputDirectory, int keepLast, bool lowerIsBetter)
    {
        if (keepLast <= 0) return [];
        var complete = ListComplete(outputDirectory);
        if (complete.Count <= keepLast) return [];
        var keep = new HashSet<string>(complete.TakeLast(keepLast).Select(c => c.Path), StringComparer.Ordinal);
        var best = BestOf(complete, lowerIsBetter);
        if (best is not null) keep.Add(best);
        var deleted = new List<string>();
        foreach (var (_, path) in complete)
        {
            if (keep.Contains(path)) continue;
            TryDelete(path);
            deleted.Add(path);
        }
        return deleted;
    }

    /// <summary>The checkpoint with the best recorded metric (ties: the earliest), or null when none recorded one.</summary>
    public static string? BestOf(IEnumerable<(long Step, string Path)> checkpoints, bool lowerIsBetter)
    {
        string? best = null;
        double bestValue = 0;
        foreach (var (_, path) in checkpoints)
        {
            double? metric;
            try { metric = TrainerState.Load(path).Metric; }
            catch (CheckpointException) { continue; }
            if (metric is not double v || !double.IsFinite(v)) continue;
            if (best is null || (lowerIsBetter ? v < bestValue : v > bestValue))
            {
                best = path;
                bestValue = v;
            }
        }
        return best;
    }

    /// <summary>Removes leftovers of interrupted saves (<c>checkpoint-N.tmp-*</c>, <c>checkpoint-N.old-*</c>). Call it at the
    /// start of a run, when no save can be under way in this directory. Returns the folders removed.</summary>
    public static IReadOnlyList<string> DeleteLeftovers(string outputDirectory)
    {
        if (!Directory.Exists(outputDirectory)) return [];
        var removed = new List<string>();
        foreach (var dir in Directory.EnumerateDirectories(outputDirectory, CheckpointFolder.Prefix + "*"))
        {
            var name = Path.GetFileName(dir);
            if (!name.Contains(TempMarker, StringComparison.Ordinal) && !name.Contains(OldMarker, StringComparison.Ordinal)) continue;
            TryDelete(dir);
            removed.Add(dir);
        }
        return removed;
    }

    private static void TryDelete(string folder)
    {
        try { if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
