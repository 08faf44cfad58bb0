using System.Runtime.InteropServices;
using RlhfStudio.Engine.Runtime;

namespace RlhfStudio.Engine.Tests.Runtime;

public class NativeSettingsTests
{
    [DllImport("libc", EntryPoint = "getenv")]
    private static extern IntPtr getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    [Fact]
    public void The_openmp_spin_count_is_in_the_c_environment_before_libtorch_loads_unless_the_user_set_one()
    {
        if (!OperatingSystem.IsLinux()) return;
        NativeSettings.Apply();   // already applied by the module initializer; a second call changes nothing
        var value = Marshal.PtrToStringUTF8(getenv("GOMP_SPINCOUNT"));
        Assert.NotNull(NativeSettings.SpinCountFromUser);
        if (NativeSettings.SpinCountFromUser == true)
            Assert.Equal(Environment.GetEnvironmentVariable("GOMP_SPINCOUNT"), value);
        else
            Assert.Equal(NativeSettings.OpenMpSpinCount, value);
    }
}
