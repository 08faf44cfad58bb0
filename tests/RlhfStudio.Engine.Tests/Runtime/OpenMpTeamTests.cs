using RlhfStudio.Engine.Runtime;
using TorchSharp;

namespace RlhfStudio.Engine.Tests.Runtime;

public class OpenMpTeamTests
{
    public OpenMpTeamTests() => torch.ones(1).Dispose();   // libtorch (and its libgomp) loaded

    [Fact]
    public void Libtorchs_libgomp_is_found_on_linux()
    {
        if (!OperatingSystem.IsLinux()) return;
        Assert.True(OpenMpTeam.IsAvailable);
        // The copy beside libtorch_cpu.so, the runtime whose threads libtorch's own ops use.
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(OpenMpTeam.LibraryPath)!, "libtorch_cpu.so")), OpenMpTeam.LibraryPath);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(5)]   // more parts than cores: each thread of the team takes several
    public void Every_part_runs_once_on_the_team_and_the_caller_is_one_of_its_threads(int parts)
    {
        if (!OpenMpTeam.IsAvailable) return;
        var counts = new int[parts];
        var threads = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
        for (int run = 0; run < 500; run++)
        {
            int finished = 0;
            OpenMpTeam.Run(parts, part =>
            {
                Interlocked.Increment(ref counts[part]);
                threads[Environment.CurrentManagedThreadId] = true;
                if (part == parts - 1) Thread.SpinWait(50);
                Interlocked.Increment(ref finished);
            });
            Assert.Equal(parts, finished);
        }
        Assert.All(counts, c => Assert.Equal(500, c));
        Assert.Contains(Environment.CurrentManagedThreadId, threads.Keys);
        if (Environment.ProcessorCount > 1) Assert.True(threads.Count > 1, "the parts ran on the caller alone");
    }

    [Fact]
    public void An_exception_in_a_part_reaches_the_caller_and_the_team_keeps_working()
    {
        if (!OpenMpTeam.IsAvailable) return;
        var error = Assert.Throws<InvalidOperationException>(() => OpenMpTeam.Run(2, part =>
        {
            if (part == 1) throw new InvalidOperationException("part failed");
        }));
        Assert.Equal("part failed", error.Message);
        int calls = 0;
        OpenMpTeam.Run(2, _ => Interlocked.Increment(ref calls));
        Assert.Equal(2, calls);
    }

    [Fact]
    public void ForRanges_covers_the_range_once_in_contiguous_parts()
    {
        var seen = new int[1000];
        var parts = new System.Collections.Concurrent.ConcurrentBag<(int Start, int End, int Part)>();
        WorkerTeam.ForRanges(seen.Length, 3, (start, end, part) =>
        {
            parts.Add((start, end, part));
            for (int i = start; i < end; i++) Interlocked.Increment(ref seen[i]);
        });
        Assert.All(seen, c => Assert.Equal(1, c));
        Assert.Equal([0, 1, 2], parts.Select(p => p.Part).Order());
        Assert.Equal([(0, 334), (334, 668), (668, 1000)], parts.OrderBy(p => p.Part).Select(p => (p.Start, p.End)));
    }
}
