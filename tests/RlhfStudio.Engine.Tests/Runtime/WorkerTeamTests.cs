using RlhfStudio.Engine.Runtime;

namespace RlhfStudio.Engine.Tests.Runtime;

public class WorkerTeamTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Every_run_calls_each_index_once_and_returns_after_all_finished(int size)
    {
        using var team = new WorkerTeam(size);
        var counts = new int[size];
        for (int run = 0; run < 2000; run++)
        {
            int finished = 0;
            team.Run(i =>
            {
                Interlocked.Increment(ref counts[i]);
                if (i == size - 1) Thread.SpinWait(50);   // the last helper is the slowest: Run must still wait for it
                Interlocked.Increment(ref finished);
            });
            Assert.Equal(size, finished);
            // Every few hundred runs let the helpers fall asleep (they spin ~50 us first) and wake them again.
            if (run % 500 == 0) Thread.Sleep(5);
        }
        Assert.All(counts, c => Assert.Equal(2000, c));
    }

    [Fact]
    public void An_exception_in_a_helper_reaches_the_caller_and_the_team_keeps_working()
    {
        using var team = new WorkerTeam(2);
        var error = Assert.Throws<InvalidOperationException>(() => team.Run(i =>
        {
            if (i == 1) throw new InvalidOperationException("helper failed");
        }));
        Assert.Equal("helper failed", error.Message);
        int calls = 0;
        team.Run(_ => Interlocked.Increment(ref calls));
        Assert.Equal(2, calls);
    }

    [Fact]
    public void A_disposed_team_refuses_work()
    {
        var team = new WorkerTeam(2);
        team.Dispose();
        team.Dispose();
        Assert.Throws<ObjectDisposedException>(() => team.Run(_ => { }));
    }
}
