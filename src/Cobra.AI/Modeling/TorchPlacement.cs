using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling;

/// <summary>Numeric precision of the model's parameters and activations.</summary>
internal enum Precision
{
    /// <summary>float32 everywhere (CPU default; matches the golden kits).</summary>
    Float32,

    /// <summary>bfloat16 weights and activations at the reference's cast points (CUDA default).</summary>
    BFloat16,

    /// <summary>float16: allowed, but Cobra is sensitive to low precision and CPUs run it very slowly.</summary>
    Float16,
}

/// <summary>Parses device and precision names and applies the defaults of architecture.md.</summary>
internal static class TorchPlacement
{
    /// <summary>
    /// "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". Throws
    /// <see cref="InvalidOperationException"/> when CUDA is asked for and this build or machine has none.
    /// </summary>
    public static Device ParseDevice(string? spec)
    {
        TorchRuntime.EnsureInitialized();
        string value = string.IsNullOrWhiteSpace(spec) ? "auto" : spec.Trim().ToLowerInvariant();
        if (value == "auto")
        {
            return torch.cuda.is_available() ? torch.CUDA : torch.CPU;
        }

        if (value == "cpu")
        {
            return torch.CPU;
        }

        if (value == "cuda" || value.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!torch.cuda.is_available())
            {
                throw new InvalidOperationException(
                    $"Device '{spec}' was requested but CUDA is not available (build with -p:TorchBackend=cuda on a machine with an NVIDIA driver).");
            }

            int index = value == "cuda" ? 0 : int.TryParse(value[5..], out int i) && i >= 0 ? i
                : throw new ArgumentException($"Device '{spec}' is not of the form cuda:N.", nameof(spec));
            if (index >= torch.cuda.device_count())
            {
                throw new InvalidOperationException($"Device '{spec}' does not exist: {torch.cuda.device_count()} CUDA device(s) found.");
            }

            return torch.device(DeviceType.CUDA, index);
        }

        throw new ArgumentException($"Unknown device '{spec}': use auto, cpu, cuda or cuda:N.", nameof(spec));
    }

    /// <summary>"fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16"; null or "auto" picks the device default.</summary>
    public static Precision ParsePrecision(string? spec, Device device) =>
        (spec ?? "auto").Trim().ToLowerInvariant() switch
        {
            "auto" or "" => device.type == DeviceType.CPU ? Precision.Float32 : Precision.BFloat16,
            "fp32" or "float32" => Precision.Float32,
            "bf16" or "bfloat16" => Precision.BFloat16,
            "fp16" or "float16" or "half" => Precision.Float16,
            _ => throw new ArgumentException($"Unknown precision '{spec}': use fp32, bf16 or fp16.", nameof(spec)),
        };

    /// <summary>The parameter dtype of a precision.</summary>
    public static ScalarType ToScalarType(this Precision precision) => precision switch
    {
        Precision.BFloat16 => ScalarType.BFloat16,
        Precision.Float16 => ScalarType.Float16,
        _ => ScalarType.Float32,
    };
}
