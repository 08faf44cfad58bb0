// Parallel sections of our kernels on libtorch's own OpenMP team (GOMP_parallel of the libgomp libtorch loaded) instead
// of a second team of .NET threads. Between ops libgomp's idle workers spin (GOMP_SPINCOUNT) on the second core; a
// kernel that wakes its own helper there makes three runnable threads on two cores, and the helper waits for the
// spinner's time slice or spin count to end. On the same team the helper that runs our section is the spinner itself.
using System.Runtime.InteropServices;

namespace RlhfStudio.Engine.Runtime;

internal static unsafe class OpenMpTeam
{
    private static readonly delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> Parallel;
    private static readonly delegate* unmanaged<int> ThreadNumber, ThreadCount;

    /// <summary>Whether libtorch's libgomp was found (Linux builds of libtorch; otherwise <see cref="WorkerTeam"/> runs the sections).</summary>
    public static bool IsAvailable { get; }

    /// <summary>The libgomp the sections run on, when found.</summary>
    public static string? LibraryPath { get; }

    static OpenMpTeam()
    {
        if (!OperatingSystem.IsLinux()) return;
        // libtorch's wheels ship their own libgomp under a hashed name (libgomp-98b21ff3.so.1); use the copy this process
        // loaded (libtorch is loaded by the time a kernel runs), never a second OpenMP runtime with its own threads.
        string? path = null;
        try
        {
            // Every loaded libgomp, preferring the one beside libtorch_cpu (another library may have loaded the system's).
            var loaded = new List<string>();
            string? torchDirectory = null;
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/');
                if (slash < 0) continue;
                var file = line[slash..];
                var name = Path.GetFileName(file);
                if (name.StartsWith("libgomp", StringComparison.Ordinal) && name.Contains(".so", StringComparison.Ordinal) && !loaded.Contains(file)) loaded.Add(file);
                else if (name == "libtorch_cpu.so") torchDirectory ??= Path.GetDirectoryName(file);
            }
            path = loaded.FirstOrDefault(f => Path.GetDirectoryName(f) == torchDirectory) ?? loaded.FirstOrDefault();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        if (path is null || !NativeLibrary.TryLoad(path, out var library)) return;
        if (!NativeLibrary.TryGetExport(library, "GOMP_parallel", out var parallel) ||
            !NativeLibrary.TryGetExport(library, "omp_get_thread_num", out var number) ||
            !NativeLibrary.TryGetExport(library, "omp_get_num_threads", out var count))
            return;
        Parallel = (delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void>)parallel;
        ThreadNumber = (delegate* unmanaged<int>)number;
        ThreadCount = (delegate* unmanaged<int>)count;
        LibraryPath = path;
        IsAvailable = true;
    }

    private sealed class Section(int parts, Action<int> body)
    {
        public readonly int Parts = parts;
        public readonly Action<int> Body = body;
        public Exception? Error;
    }

    /// <summary>Runs <paramref name="body"/>(part) for part = 0 .. <paramref name="parts"/> - 1 on up to
    /// <paramref name="parts"/> threads of the OpenMP team (the caller is one of them) and returns when all are done; an
    /// exception in any part is rethrown here. Every part runs even if the team comes out smaller than asked.</summary>
    public static void Run(int parts, Action<int> body)
    {
        if (!IsAvailable) throw new PlatformNotSupportedException("libgomp is not loaded");
        var section = new Section(parts, body);
        var handle = GCHandle.Alloc(section);
        try
        {
            Parallel(&Entry, (void*)GCHandle.ToIntPtr(handle), (uint)parts, 0);
        }
        finally { handle.Free(); }
        if (section.Error is { } error) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
    }

    [UnmanagedCallersOnly]
    private static void Entry(void* data)
    {
        var section = (Section)GCHandle.FromIntPtr((IntPtr)data).Target!;
        try
        {
            int threads = ThreadCount(), me = ThreadNumber();
            for (int part = me; part < section.Parts; part += threads) section.Body(part);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref section.Error, e, null);
        }
    }
}
