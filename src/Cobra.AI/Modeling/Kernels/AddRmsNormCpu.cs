using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// mamba_ssm's fused add + RMSNorm in one pass over rows [..., D] (the decode step's [B, D] and a prefill's
/// [B, L, D]): r = float32(h) + r (h alone for the first block), then RMSNorm(r) · w in float32, returned in the
/// model dtype. Replaces nine torch ops per block (and their float32 copies of the activations). Same arithmetic
/// as the torch-op path of <see cref="Mamba.RmsNorm.AddAndNormalize"/> (the oracle), up to the order of the sum
/// of squares. Prompt-sized inputs split their rows over <see cref="KernelWorkers"/>.
/// </summary>
internal static class AddRmsNormCpu
{
    /// <summary>True when the kernel handles these tensors.</summary>
    public static bool Supports(Tensor hidden, Tensor? residual) =>
        hidden.device_type == DeviceType.CPU && hidden.dim() >= 2 && hidden.NumberOfElements > 0
        && (hidden.dtype == ScalarType.Float32 || hidden.dtype == ScalarType.BFloat16)
        && (residual is null || (residual.device_type == DeviceType.CPU && residual.dtype == ScalarType.Float32 && residual.is_contiguous()
                                 && residual.shape.SequenceEqual(hidden.shape)));

    /// <summary>Returns (RMSNorm(r) in the dtype of <paramref name="hidden"/>, r) for r = h + residual, both shaped like <paramref name="hidden"/>.</summary>
    public static unsafe (Tensor Normalized, Tensor Residual) Run(Tensor hidden, Tensor? residual, Tensor weight, float epsilon)
    {
        int width = (int)hidden.shape[^1];
        long rows = hidden.NumberOfElements / width;
        using var h = hidden.contiguous();                                       // [..., D]
        using var w = weight.to(ScalarType.Float32).contiguous();               // [D]
        var r = torch.empty(hidden.shape, ScalarType.Float32, torch.CPU);       // [..., D]
        var normalized = torch.empty(hidden.shape, hidden.dtype, torch.CPU);     // [..., D]
        var job = new Job(TensorMemory.Address(h), residual is null ? 0 : TensorMemory.Address(residual), TensorMemory.Address(w),
            TensorMemory.Address(r), TensorMemory.Address(normalized), width, epsilon, hidden.dtype == ScalarType.BFloat16);
        KernelWorkers.Split(rows, 1, (from, to) => Rows(job, from, to), parallel: rows * width >= 1 << 16);

        return (normalized, r);
    }

    private readonly record struct Job(nint Hidden, nint Residual, nint Weight, nint Sum, nint Normalized, int Width, float Epsilon, bool BFloat16);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void Rows(in Job job, long from, long to)
    {
        int lanes = Vector<float>.Count, width = job.Width, body = width / lanes * lanes;
        float* previous = (float*)job.Residual, rp = (float*)job.Sum, wp = (float*)job.Weight;
        for (long b = from; b < to; b++)
        {
            long row = b * width;

            // 1. r = h + r (float32), and Σ r² in lanes, then across them.
            var squares = Vector<float>.Zero;
            for (int i = 0; i < body; i += lanes)
            {
                var value = KernelMath.LoadWide(job.Hidden, row + i, job.BFloat16) + (previous is null ? Vector<float>.Zero : KernelMath.Load(previous + row + i));
                KernelMath.Store(value, rp + row + i);
                squares = Vector.FusedMultiplyAdd(value, value, squares);
            }

            float sum = Vector.Sum(squares);
            for (int i = body; i < width; i++)
            {
                float value = KernelMath.Read(job.Hidden, row + i, job.BFloat16) + (previous is null ? 0f : previous[row + i]);
                rp[row + i] = value;
                sum += value * value;
            }

            // 2. RMSNorm(r) · w, rounded once.
            float inverseRms = 1f / MathF.Sqrt((sum / width) + job.Epsilon);
            for (int i = 0; i < body; i += lanes)
            {
                KernelMath.StoreNarrow(KernelMath.Load(rp + row + i) * inverseRms * KernelMath.Load(wp + i), job.Normalized, row + i, job.BFloat16);
            }

            for (int i = body; i < width; i++)
            {
                KernelMath.Write(job.Normalized, row + i, rp[row + i] * inverseRms * wp[i], job.BFloat16);
            }
        }
    }
}
