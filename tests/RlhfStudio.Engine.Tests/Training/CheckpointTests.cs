using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Tests.Training;

public class CheckpointTests
{
    private static TrainerState State(long step, double? metric = null) => new()
    {
        GlobalStep = step,
        TotalSteps = 100,
        Sampler = new SamplerState(0, 0, 1, 10, 2, false, true),
        Metric = metric,
    };

    private static string WriteCheckpoint(string output, long step, double? metric = null) =>
        Checkpoints.Write(output, step, folder =>
        {
            File.WriteAllText(Path.Combine(folder, "model.bin"), $"weights at {step}");
            Directory.CreateDirectory(Path.Combine(folder, "sub"));
            File.WriteAllBytes(Path.Combine(folder, "sub", "part.bin"), [1, 2, 3, (byte)step]);
            State(step, metric).Save(folder);
        });

    [Fact]
    public void A_written_checkpoint_has_a_manifest_of_every_file_and_verifies()
    {
        using var dir = new TempDir();
        var path = WriteCheckpoint(dir.Path, 7);
        Assert.Equal(Path.Combine(dir.Path, "checkpoint-7"), path);
        Assert.True(CheckpointFolder.IsComplete(path));
        var manifest = Checkpoints.Verify(path);
        Assert.Equal(7, manifest.Step);
        Assert.Equal(["model.bin", "sub/part.bin", TrainerState.FileName], manifest.Files.Select(f => f.Path).Order(StringComparer.Ordinal));
        Assert.Equal(4, manifest.Files.Single(f => f.Path == "sub/part.bin").Size);
        Assert.Equal(7, Checkpoints.Open(path).State.GlobalStep);
        Assert.Single(Directory.EnumerateDirectories(dir.Path));   // no temporary folder left behind
    }

    [Fact]
    public void A_save_that_fails_midway_leaves_nothing_that_looks_like_a_checkpoint()
    {
        using var dir = new TempDir();
        Assert.Throws<IOException>(() => Checkpoints.Write(dir.Path, 3, folder =>
        {
            File.WriteAllText(Path.Combine(folder, "model.bin"), "half");
            throw new IOException("disk full");
        }));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
        Assert.Null(Checkpoints.LoadLatestComplete(dir.Path));
    }

    [Fact]
    public void LoadLatestComplete_skips_missing_manifests_corrupt_and_truncated_files_and_temporaries()
    {
        using var dir = new TempDir();
        WriteCheckpoint(dir.Path, 2);
        var good = WriteCheckpoint(dir.Path, 4);
        var corrupt = WriteCheckpoint(dir.Path, 6);
        var truncated = WriteCheckpoint(dir.Path, 8);
        var noManifest = WriteCheckpoint(dir.Path, 10);
        var tempLike = Path.Combine(dir.Path, "checkpoint-12.tmp-abc");
        Directory.Move(WriteCheckpoint(dir.Path, 12), tempLike);   // complete inside, but never renamed into place

        var bytes = File.ReadAllBytes(Path.Combine(corrupt, "sub", "part.bin"));
        bytes[0] ^= 0xFF;   // same size, different content
        File.WriteAllBytes(Path.Combine(corrupt, "sub", "part.bin"), bytes);
        File.WriteAllText(Path.Combine(truncated, "model.bin"), "w");
        File.Delete(Path.Combine(noManifest, CheckpointFolder.ManifestFile));

        var reporter = new RecordingReporter();
        var latest = Checkpoints.LoadLatestComplete(dir.Path, reporter);
        Assert.NotNull(latest);
        Assert.Equal(good, latest.Path);
        Assert.Equal(4, latest.Step);
        var warnings = reporter.Events.Select(e => e.Message).ToList();
        Assert.Equal(3, warnings.Count);
        Assert.Contains(warnings, m => m.StartsWith("checkpoint-10") && m.Contains("no checkpoint_manifest.json"));
        Assert.Contains(warnings, m => m.StartsWith("checkpoint-8") && m.Contains("bytes, the manifest says"));
        Assert.Contains(warnings, m => m.StartsWith("checkpoint-6") && m.Contains("SHA-256 differs"));
        Assert.All(reporter.Events, e => Assert.Equal("checkpoint-ignored", e.Code));
    }

    [Fact]
    public void Rewriting_a_step_replaces_the_old_folder_only_when_the_new_one_is_complete()
    {
        using var dir = new TempDir();
        var path = WriteCheckpoint(dir.Path, 5);
        Assert.Throws<InvalidOperationException>(() => Checkpoints.Write(dir.Path, 5, _ => throw new InvalidOperationException("boom")));
        Checkpoints.Verify(path);   // the old one is intact
        Checkpoints.Write(dir.Path, 5, folder => { File.WriteAllText(Path.Combine(folder, "model.bin"), "new"); State(5).Save(folder); });
        Assert.Equal("new", File.ReadAllText(Path.Combine(path, "model.bin")));
        Assert.False(Directory.Exists(Path.Combine(path, "sub")));
        Assert.Single(Directory.EnumerateDirectories(dir.Path));
    }

    [Fact]
    public void Retention_keeps_the_last_N_and_the_best()
    {
        using var dir = new TempDir();
        WriteCheckpoint(dir.Path, 1, metric: 0.9);
        WriteCheckpoint(dir.Path, 2, metric: 0.3);   // best (lowest)
        WriteCheckpoint(dir.Path, 3, metric: 0.5);
        WriteCheckpoint(dir.Path, 4, metric: 0.7);
        WriteCheckpoint(dir.Path, 5, metric: null);
        var deleted = Checkpoints.ApplyRetention(dir.Path, keepLast: 2, lowerIsBetter: true);
        Assert.Equal(["checkpoint-1", "checkpoint-3"], deleted.Select(Path.GetFileName).Order());
        Assert.Equal([2L, 4, 5], Checkpoints.ListComplete(dir.Path).Select(c => c.Step));

        var higher = Checkpoints.ApplyRetention(dir.Path, keepLast: 1, lowerIsBetter: false);
        Assert.Equal(["checkpoint-2"], higher.Select(Path.GetFileName));
        Assert.Equal([4L, 5], Checkpoints.ListComplete(dir.Path).Select(c => c.Step));
        Assert.Empty(Checkpoints.ApplyRetention(dir.Path, keepLast: 0, lowerIsBetter: true));
    }

    [Fact]
    public void Leftovers_of_interrupted_saves_are_removed_and_checkpoints_kept()
    {
        using var dir = new TempDir();
        var kept = WriteCheckpoint(dir.Path, 1);
        Directory.CreateDirectory(Path.Combine(dir.Path, "checkpoint-2.tmp-0123"));
        Directory.CreateDirectory(Path.Combine(dir.Path, "checkpoint-1.old-4567"));
        Assert.Equal(2, Checkpoints.DeleteLeftovers(dir.Path).Count);
        Assert.Equal([kept], Directory.EnumerateDirectories(dir.Path));
    }
}
