using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling;

/// <summary>
/// A module with a managed SIMD kernel for CPU tensors (the decode GEMV, the fused scan). Switched off, it runs
/// the device-generic torch-op path that CUDA takes (libtorch linear, the chunked scan), on the CPU too.
/// </summary>
internal interface IManagedKernelSwitch
{
    /// <summary>Use the managed kernel where it applies (CPU tensors of supported shapes); default true.</summary>
    bool UseManagedKernels { get; set; }
}

/// <summary>The switch between the managed CPU kernels and the device-generic path, per model.</summary>
internal static class ManagedKernels
{
    /// <summary>Set to <c>0</c> (or <c>false</c>/<c>off</c>) to turn the managed kernels off whatever the options say.</summary>
    public const string EnvironmentVariable = "COBRA_MANAGED_KERNELS";

    /// <summary>
    /// The requested setting (<see cref="CobraModelOptions.UseManagedCpuKernels"/>), unless
    /// <see cref="EnvironmentVariable"/> turns the kernels off. Other values of the variable are refused.
    /// </summary>
    public static bool Resolve(bool requested) => Resolve(requested, Environment.GetEnvironmentVariable(EnvironmentVariable));

    /// <summary><see cref="Resolve(bool)"/> for a given value of the environment variable <paramref name="variable"/> (null when unset).</summary>
    public static bool Resolve(bool requested, string? environmentValue, string variable = EnvironmentVariable)
    {
        string? value = environmentValue?.Trim().ToLowerInvariant();
        return value switch
        {
            null or "" or "1" or "true" or "on" => requested,
            "0" or "false" or "off" => false,
            _ => throw new InvalidOperationException($"Environment variable {variable}='{value}' is not one of 0, 1, true, false, on, off."),
        };
    }

    /// <summary>Applies <paramref name="enabled"/> to every part of <paramref name="model"/>.</summary>
    public static void Configure(CobraModel model, bool enabled)
    {
        Configure(model.LanguageModel, enabled);
        if (model.Vision is not null)
        {
            Configure(model.Vision, enabled);
        }

        if (model.Projector is not null)
        {
            Configure(model.Projector, enabled);
        }
    }

    /// <summary>Applies <paramref name="enabled"/> to <paramref name="root"/> and every module below it.</summary>
    public static void Configure(nn.Module root, bool enabled)
    {
        if (root is IManagedKernelSwitch self)
        {
            self.UseManagedKernels = enabled;
        }

        foreach (var (_, module) in root.named_modules())
        {
            if (module is IManagedKernelSwitch child)
            {
                child.UseManagedKernels = enabled;
            }
        }
    }
}
