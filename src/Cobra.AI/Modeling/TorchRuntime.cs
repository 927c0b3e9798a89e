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
    /// Sets the native threading and allocator environment (unless the user set it) and loads the native
    /// backend. Call before any other TorchSharp use; safe to call many times.
    /// </summary>
    public static void EnsureInitialized()
    {
        lock (Gate)
        {
            if (initialized)
            {
                return;
            }

            // Native code reads these with getenv(); Environment.SetEnvironmentVariable is managed-only on Unix.
            // A value the user already set wins (overwrite = 0).
            if (!OperatingSystem.IsWindows())
            {
                // Huge pages for libtorch's CPU allocations: fresh buffers fill at memory speed, not page-fault speed.
                _ = SetEnv("THP_MEM_ALLOC_ENABLE", "1", 0);

                // libgomp's workers otherwise spin after every op, taking the cores our own SIMD kernels
                // (scan, decode GEMV) run on between torch ops; read when libgomp loads, so set it first.
                _ = SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0);
            }

            torch.InitializeDeviceType(DeviceType.CPU);
            initialized = true;
        }
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
