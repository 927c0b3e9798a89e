using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// mamba_ssm's fused add + RMSNorm for the decode step's [B, D] rows in one pass: r = float32(h) + r (h alone
/// for the first block), then RMSNorm(r) · w in float32, returned in the model dtype. Replaces nine torch
/// ops per block. Same arithmetic as the torch-op path of <see cref="Mamba.RmsNorm.AddAndNormalize"/>
/// (the oracle), up to the order of the sum of squares.
/// </summary>
internal static class AddRmsNormCpu
{
    /// <summary>True when the kernel handles these tensors.</summary>
    public static bool Supports(Tensor hidden, Tensor? residual) =>
        hidden.device_type == DeviceType.CPU && hidden.dim() == 2
        && (hidden.dtype == ScalarType.Float32 || hidden.dtype == ScalarType.BFloat16)
        && (residual is null || (residual.device_type == DeviceType.CPU && residual.dtype == ScalarType.Float32 && residual.is_contiguous()
                                 && residual.shape.SequenceEqual(hidden.shape)));

    /// <summary>Returns (RMSNorm(r) in the dtype of <paramref name="hidden"/>, r) for r = h + residual.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    public static unsafe (Tensor Normalized, Tensor Residual) Run(Tensor hidden, Tensor? residual, Tensor weight, float epsilon)
    {
        int rows = (int)hidden.shape[0], width = (int)hidden.shape[1];
        bool bf16 = hidden.dtype == ScalarType.BFloat16;
        using var h = hidden.contiguous();                                       // [B,D]
        using var w = weight.to(ScalarType.Float32).contiguous();               // [D]
        var r = torch.empty([rows, width], ScalarType.Float32, torch.CPU);      // [B,D]
        var normalized = torch.empty([rows, width], hidden.dtype, torch.CPU);    // [B,D]
        nint hp = TensorMemory.Address(h), normalizedData = TensorMemory.Address(normalized);
        float* rp = (float*)TensorMemory.Address(r);
        float* previous = residual is null ? null : (float*)TensorMemory.Address(residual);
        float* wp = (float*)TensorMemory.Address(w);
        for (long b = 0; b < rows; b++)
        {
            long row = b * width;
            float squares = 0;
            for (int i = 0; i < width; i++)
            {
                float value = KernelMath.Read(hp, row + i, bf16) + (previous is null ? 0f : previous[row + i]);
                rp[row + i] = value;
                squares += value * value;
            }

            float inverseRms = 1f / MathF.Sqrt((squares / width) + epsilon);
            for (int i = 0; i < width; i++)
            {
                KernelMath.Write(normalizedData, row + i, rp[row + i] * inverseRms * wp[i], bf16);
            }
        }

        return (normalized, r);
    }
}
