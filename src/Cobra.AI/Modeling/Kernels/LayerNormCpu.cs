using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// The towers' LayerNorm (<see cref="Modeling.LayerNorm"/>) as one CPU pass per row: float32 statistics and affine
/// over float32 or bf16 input, one rounding of the output to the input's dtype, as autocast runs timm's LayerNorm in
/// the reference's bf16 passes. The torch-op path (widen, F.layer_norm, narrow: three passes and two float32
/// copies of the activations) stays the device-generic path and the oracle. The affine step is libtorch's
/// ((x·rstd − mean·rstd)·γ + β, each product and sum rounded); the moments are summed in another order (two passes: the mean, then the squared
/// deviations), so an output can differ from libtorch's in its last float32 bit. Rows are split over <see cref="KernelWorkers"/>.
/// </summary>
internal static class LayerNormCpu
{
    /// <summary>True when <see cref="Run"/> handles these tensors.</summary>
    public static bool Supports(Tensor input, Tensor weight, Tensor bias) =>
        input.device_type == DeviceType.CPU && (input.dtype == ScalarType.Float32 || input.dtype == ScalarType.BFloat16)
        && input.dim() >= 1 && input.NumberOfElements > 0 && input.shape[^1] <= int.MaxValue
        && weight.device_type == DeviceType.CPU && bias.device_type == DeviceType.CPU && weight.dim() == 1 && bias.dim() == 1
        && weight.shape[0] == input.shape[^1] && bias.shape[0] == input.shape[^1];

    /// <summary>LayerNorm over the last dimension of <paramref name="input"/> [..., C] with weight and bias [C]: [..., C] in the input's dtype.</summary>
    public static unsafe Tensor Run(Tensor input, Tensor weight, Tensor bias, float epsilon)
    {
        int width = (int)input.shape[^1];
        long rows = input.NumberOfElements / width;
        using var x = input.contiguous();                                        // [..., C]
        using var gamma = weight.to(ScalarType.Float32).contiguous();            // [C]
        using var beta = bias.to(ScalarType.Float32).contiguous();               // [C]
        var output = torch.empty(input.shape, input.dtype, torch.CPU);           // [..., C]
        var job = new Job(TensorMemory.Address(x), TensorMemory.Address(gamma), TensorMemory.Address(beta), TensorMemory.Address(output),
            width, epsilon, input.dtype == ScalarType.BFloat16);
        KernelWorkers.Split(rows, 1, (from, to) => Rows(job, from, to), parallel: rows * width >= 1 << 15);

        return output;
    }

    private readonly record struct Job(nint Input, nint Gamma, nint Beta, nint Output, int Width, float Epsilon, bool BFloat16);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void Rows(in Job job, long from, long to)
    {
        int lanes = Vector<float>.Count, width = job.Width, body = width / lanes * lanes;
        float* gamma = (float*)job.Gamma, beta = (float*)job.Beta;
        for (long r = from; r < to; r++)
        {
            long row = r * width;

            // 1. mean = Σ x / C; 2. variance = Σ (x − mean)² / C (population, as torch's), both in float32.
            var sum = Vector<float>.Zero;
            for (int i = 0; i < body; i += lanes)
            {
                sum += KernelMath.LoadWide(job.Input, row + i, job.BFloat16);
            }

            float total = Vector.Sum(sum);
            for (int i = body; i < width; i++)
            {
                total += KernelMath.Read(job.Input, row + i, job.BFloat16);
            }

            float mean = total / width;
            var squares = Vector<float>.Zero;
            for (int i = 0; i < body; i += lanes)
            {
                var deviation = KernelMath.LoadWide(job.Input, row + i, job.BFloat16) - new Vector<float>(mean);
                squares = Vector.FusedMultiplyAdd(deviation, deviation, squares);
            }

            float squared = Vector.Sum(squares);
            for (int i = body; i < width; i++)
            {
                float deviation = KernelMath.Read(job.Input, row + i, job.BFloat16) - mean;
                squared += deviation * deviation;
            }

            // 3. y = (x·rstd − mean·rstd)·γ + β, rounded once.
            float rstd = 1f / MathF.Sqrt((squared / width) + job.Epsilon);
            float shift = -mean * rstd;
            for (int i = 0; i < body; i += lanes)
            {
                var normalized = (KernelMath.LoadWide(job.Input, row + i, job.BFloat16) * rstd) + new Vector<float>(shift); // separate roundings, as libtorch
                KernelMath.StoreNarrow((normalized * KernelMath.Load(gamma + i)) + KernelMath.Load(beta + i), job.Output, row + i, job.BFloat16);
            }

            for (int i = body; i < width; i++)
            {
                float normalized = (KernelMath.Read(job.Input, row + i, job.BFloat16) * rstd) + shift;
                KernelMath.Write(job.Output, row + i, (normalized * gamma[i]) + beta[i], job.BFloat16);
            }
        }
    }
}
