// A fixed team of threads for parallel sections that last microseconds (one matmul of a decode step). A thread-pool
// task or Parallel.For costs ~10-50 us to start and join here, about as long as the work. The helpers spin between
// sections and sleep once idle for a while (~50 us), so a team costs nothing while the caller runs other code, e.g.
// libtorch ops with their own threads. The fused decoder keeps a team of its own: its ~40 sections a token each last
// ~10-30 us, where this team's hand-off beats GOMP_parallel's (tiny bf16 generation 7.5-7.7k against 6.9-7.5k tok/s);
// the training kernels between libtorch ops run on libtorch's OpenMP team instead (ForRanges, OpenMpTeam).
using System.Runtime.ExceptionServices;

namespace RlhfStudio.Engine.Runtime;

internal sealed class WorkerTeam : IDisposable
{
    /// <summary>Spin iterations (Thread.SpinWait(16) each, ~0.3 us) before an idle helper sleeps.</summary>
    private const int SpinLimit = 200;

    /// <summary>Spin iterations (Thread.SpinWait(4) each) of the caller waiting for its helpers before it yields.</summary>
    private const int YieldAfter = 2000;

    private readonly Thread[] _helpers;
    private readonly object _gate = new();
    private Action<int>? _work;
    private Exception? _error;
    private int _generation, _pending, _sleepers;
    private volatile bool _stopping;

    /// <summary>A team of <paramref name="size"/> threads: the caller plus size - 1 helpers.</summary>
    public WorkerTeam(int size)
    {
        Size = Math.Max(1, size);
        _helpers = new Thread[Size - 1];
        for (int i = 0; i < _helpers.Length; i++)
        {
            int index = i + 1;
            _helpers[i] = new Thread(() => Loop(index)) { IsBackground = true, Name = $"rlhf-worker-{index}" };
            _helpers[i].Start();
        }
    }

    public int Size { get; }

    /// <summary>Splits [0, <paramref name="count"/>) into up to <paramref name="threads"/> contiguous ranges and runs
    /// <paramref name="body"/>(start, end, part) for each on libtorch's OpenMP team, or where that is not reachable on a pooled team (one no other caller is using).</summary>
    public static void ForRanges(int count, int threads, Action<int, int, int> body)
    {
        int parts = Math.Clamp(threads, 1, Math.Max(1, count));
        if (parts == 1)
        {
            body(0, count, 0);
            return;
        }
        int chunk = (count + parts - 1) / parts;
        Action<int> run = part =>
        {
            int start = part * chunk, end = Math.Min(count, start + chunk);
            if (start < end) body(start, end, part);
        };
        // The kernels that use ForRanges sit between libtorch ops: on libtorch's own OpenMP team where it is reachable
        // (see OpenMpTeam; tiny bf16 training step 3-7% faster than on a team of ours), else on a pooled team.
        if (OpenMpTeam.IsAvailable)
        {
            OpenMpTeam.Run(parts, run);
            return;
        }
        var team = Rent(parts);
        try { team.Run(run); }
        finally { Return(team); }
    }

    // Teams for ForRanges, kept between calls: a new team starts threads (stacks to map and fault in), ~0.1-0.3 ms, and
    // the kernels that use ForRanges run several times per layer. Idle helpers sleep, so pooled teams cost no CPU.
    private static readonly System.Collections.Concurrent.ConcurrentBag<WorkerTeam> Pool = [];

    private static WorkerTeam Rent(int size)
    {
        // A team of another size goes back; the pool holds few teams (one per concurrent caller and size).
        for (int tries = Pool.Count; tries > 0 && Pool.TryTake(out var team); tries--)
        {
            if (team.Size == size) return team;
            Pool.Add(team);
        }
        return new WorkerTeam(size);
    }

    private static void Return(WorkerTeam team) => Pool.Add(team);

    /// <summary>Runs <paramref name="work"/>(i) for i = 0 .. Size - 1, i = 0 on the calling thread, and returns when all
    /// are done; an exception in any of them is rethrown here.</summary>
    public void Run(Action<int> work)
    {
        ObjectDisposedException.ThrowIf(_stopping, this);
        if (Size == 1)
        {
            work(0);
            return;
        }
        _work = work;
        _error = null;
        Volatile.Write(ref _pending, Size - 1);
        Interlocked.Increment(ref _generation);
        if (Volatile.Read(ref _sleepers) > 0)
            lock (_gate) Monitor.PulseAll(_gate);
        Exception? mine = null;
        try
        {
            work(0);
        }
        catch (Exception e)
        {
            mine = e;
        }
        // Spin for the helpers, but yield once they take long: with more busy threads than cores (another run, the
        // playground) a helper may be off its core, and spinning here would only keep it off longer.
        for (int spins = 0; Volatile.Read(ref _pending) > 0; spins++)
        {
            if (spins < YieldAfter) Thread.SpinWait(4);
            else Thread.Yield();
        }
        _work = null;
        if ((mine ?? _error) is { } error) ExceptionDispatchInfo.Throw(error);
    }

    private void Loop(int index)
    {
        int seen = 0;
        while (true)
        {
            int spins = 0;
            while (Volatile.Read(ref _generation) == seen && !_stopping)
            {
                if (++spins < SpinLimit)
                {
                    Thread.SpinWait(16);
                    continue;
                }
                // The caller increments the generation before it reads the sleeper count, and this thread counts itself
                // before it reads the generation under the lock: one of the two always sees the other.
                lock (_gate)
                {
                    Interlocked.Increment(ref _sleepers);
                    while (Volatile.Read(ref _generation) == seen && !_stopping) Monitor.Wait(_gate);
                    Interlocked.Decrement(ref _sleepers);
                }
                spins = 0;
            }
            if (_stopping) return;
            seen = Volatile.Read(ref _generation);
            try
            {
                _work!(index);
            }
            catch (Exception e)
            {
                _error = e;
            }
            Interlocked.Decrement(ref _pending);
        }
    }

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        lock (_gate) Monitor.PulseAll(_gate);
        foreach (var helper in _helpers) helper.Join();
    }
}
