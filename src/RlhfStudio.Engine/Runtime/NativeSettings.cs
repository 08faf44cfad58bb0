using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace RlhfStudio.Engine.Runtime;

/// <summary>Process-wide native settings the engine needs before libtorch loads: glibc malloc (see
/// <see cref="NativeAllocator"/>) and how long libtorch's OpenMP threads spin after a parallel region.
/// libgomp spins 300,000 iterations by default (~5 ms here) before it sleeps, so after every libtorch op its idle
/// thread keeps the second core busy while our own threads want it: measured on the tiny bf16 training step when the
/// training kernels still ran on a team of ours, 205-231 ms best with the default against 176-186 ms with
/// GOMP_SPINCOUNT=10000 (1,000: 188; 30,000: 177-185). They now run on libtorch's OpenMP team itself (OpenMpTeam), where
/// the spin count made no difference beyond noise (10,000 vs 300,000, three alternating runs); 10,000 stays for what
/// still hands the cores from libtorch's team to one of ours (the fused decoder after its prefill; any WorkerTeam where
/// libgomp is not found). libgomp reads the variable once, when it
/// loads, so it is set (unless the user set it or OMP_WAIT_POLICY) before the first torch call: by the engine's module
/// initializer, which runs before any engine type is used, and by <see cref="Apply"/> for hosts that may call TorchSharp
/// before touching the engine.</summary>
public static class NativeSettings
{
    /// <summary>The spin count set when the environment names none (~0.2 ms of spinning).</summary>
    public const string OpenMpSpinCount = "10000";

    private static int _applied;

    /// <summary>Whether the user chose libgomp's waiting (GOMP_SPINCOUNT or OMP_WAIT_POLICY in the environment when the
    /// engine looked), so the engine set nothing (null: not applied yet, or not Linux).</summary>
    public static bool? SpinCountFromUser { get; private set; }

    [ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "must run before libtorch loads")]
    internal static void Initialize() => Apply();

    /// <summary>Applies the settings once per process; call first thing in a host that uses TorchSharp directly.</summary>
    public static void Apply()
    {
        if (Interlocked.Exchange(ref _applied, 1) != 0) return;
        NativeAllocator.Configure();
        if (!OperatingSystem.IsLinux()) return;
        try
        {
            SpinCountFromUser = Environment.GetEnvironmentVariable("GOMP_SPINCOUNT") is not null || Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null;
            // .NET keeps its own copy of the environment; libgomp reads the C library's, so set it there (no overwrite).
            if (SpinCountFromUser == false) setenv("GOMP_SPINCOUNT", OpenMpSpinCount, 0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
        }
    }

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
}
