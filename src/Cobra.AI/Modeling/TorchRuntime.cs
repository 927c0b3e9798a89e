using System.Runtime.InteropServices;
using TorchSharp;

namespace Cobra.AI.Modeling;

/// <summary>
/// One-time process set-up before the first libtorch call.
/// </summary>
internal static partial class TorchRuntime
{
    private static readonly Lock Gate = new();
    private static bool initialized;

    /// <summary>
    /// Enables transparent huge pages in libtorch's CPU allocator (first-touch page faults otherwise cap
    /// fresh buffers at ~1 GB/s on VMs) and loads the native backend. Safe to call many times.
    /// </summary>
    public static void EnsureInitialized()
    {
        lock (Gate)
        {
            if (initialized)
            {
                return;
            }

            // libtorch reads this with getenv(); Environment.SetEnvironmentVariable is managed-only on Unix.
            if (!OperatingSystem.IsWindows() && Environment.GetEnvironmentVariable("THP_MEM_ALLOC_ENABLE") is null)
            {
                _ = SetEnv("THP_MEM_ALLOC_ENABLE", "1", 0);
            }

            torch.InitializeDeviceType(DeviceType.CPU);
            initialized = true;
        }
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
