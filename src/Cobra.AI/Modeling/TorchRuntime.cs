using System.Runtime.InteropServices;
using TorchSharp;

namespace Cobra.AI.Modeling;

/// <summary>
/// One-time process set-up before the first libtorch call. Everything here is process-wide by nature (native
/// libraries read their environment once, when they load), so the first call in a process decides.
/// </summary>
internal static partial class TorchRuntime
{
    private static readonly Lock Gate = new();
    private static bool initialized;

    /// <summary>
    /// Loads the native backend; with <paramref name="tuneEnvironment"/> (the default,
    /// <see cref="CobraModelOptions.TuneNativeRuntime"/>) first sets, unless the user already set them:
    /// <c>THP_MEM_ALLOC_ENABLE=1</c> (huge pages for libtorch's CPU allocations: fresh buffers fill at memory
    /// speed, not page-fault speed) and <c>OMP_WAIT_POLICY=PASSIVE</c> (libgomp's workers otherwise spin after
    /// every op, taking the cores the managed kernels run on between torch ops). Safe to call many times;
    /// later calls change nothing.
    /// </summary>
    public static void EnsureInitialized(bool tuneEnvironment = true)
    {
        lock (Gate)
        {
            if (initialized)
            {
                return;
            }

            // Native code reads these with getenv(); Environment.SetEnvironmentVariable is managed-only on Unix.
            // A value the user already set wins (overwrite = 0).
            if (tuneEnvironment && !OperatingSystem.IsWindows())
            {
                _ = SetEnv("THP_MEM_ALLOC_ENABLE", "1", 0);
                _ = SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0);
            }

            torch.InitializeDeviceType(DeviceType.CPU);
            initialized = true;
        }
    }

    /// <summary>
    /// Threads for CPU compute, process-wide: libtorch's intra-op pool and the managed kernels' workers
    /// (<see cref="Kernels.KernelWorkers"/>). Null means one per core.
    /// </summary>
    public static void SetCpuThreads(int? threads)
    {
        int count = threads ?? Environment.ProcessorCount;
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1, nameof(threads));
        EnsureInitialized();
        torch.set_num_threads(count);
        Kernels.KernelWorkers.SetParallelism(count);
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
