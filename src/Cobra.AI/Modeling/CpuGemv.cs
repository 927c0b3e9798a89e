using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling;

/// <summary>
/// y = x Wᵀ (+ b) for the few-row inputs of recurrent decoding, with float32 weights on the CPU. Decoding
/// reads every weight once per token, so its speed is the rate at which weights stream from memory:
/// libtorch's float32 GEMV streams uncached weights at ~18-20 GB/s on a 2-core EPYC, this kernel (four rows
/// per pass, so four memory streams are in flight) at ~25-30 GB/s. For bfloat16 weights a managed kernel
/// was no faster than libtorch's (widening bf16 costs what the halved bandwidth saves), so they stay there.
/// </summary>
internal static class CpuGemv
{
    /// <summary>Inputs with more rows than this go to libtorch's GEMM, which reuses each weight row.</summary>
    public const int MaxRows = 4;

    /// <summary>Below this many weight bytes one thread is faster than waking another.</summary>
    private const long ParallelThresholdBytes = 1 << 20;

    /// <summary>True when <see cref="Linear"/> handles this input and weight.</summary>
    public static bool Supports(Tensor input, Tensor weight) =>
        weight.device_type == DeviceType.CPU && input.device_type == DeviceType.CPU
        && weight.dim() == 2 && weight.is_contiguous()
        && weight.NumberOfElements < int.MaxValue / sizeof(float)
        && weight.dtype == ScalarType.Float32 && input.dtype == ScalarType.Float32
        && input.shape[^1] == weight.shape[1]
        && input.NumberOfElements / weight.shape[1] <= MaxRows;

    /// <summary>x [..., K] · W [N, K]ᵀ (+ b [N]) -> [..., N]. Check <see cref="Supports"/> first.</summary>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias)
    {
        long n = weight.shape[0], k = weight.shape[1];
        int rows = (int)(input.NumberOfElements / k);
        using var x = input.reshape(rows, k).contiguous();                       // [B,K]
        var y = torch.empty([rows, n], ScalarType.Float32);                      // [B,N]
        var job = new Job(TensorMemory.Address(x), TensorMemory.Address(weight), TensorMemory.Address(y), rows, (int)n, (int)k);

        long weightBytes = weight.NumberOfElements * weight.ElementSize;
        int threads = weightBytes < ParallelThresholdBytes ? 1 : Math.Max(1, torch.get_num_threads());
        if (threads == 1)
        {
            RowRange(job, 0, job.N);
        }
        else
        {
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                RowRange(job, (int)((long)job.N * t / threads), (int)((long)job.N * (t + 1) / threads)));
        }

        if (bias is not null)
        {
            y.add_(bias);
        }

        return y.view([.. input.shape[..^1], n]);
    }

    private readonly record struct Job(nint X, nint W, nint Y, int Rows, int N, int K);

    /// <summary>
    /// Output features [from, to) for every input row. Four weight rows advance together: four independent
    /// memory streams keep enough loads in flight to approach the read bandwidth, each x chunk is loaded once
    /// for the four, and the other input rows reuse the four rows from cache (weights stream once per call).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void RowRange(Job job, int from, int to)
    {
        float* w = (float*)job.W;
        float* x = (float*)job.X;
        float* y = (float*)job.Y;
        int r = from;
        for (; r + 4 <= to; r += 4)
        {
            for (int b = 0; b < job.Rows; b++)
            {
                Dot4(w + ((long)r * job.K), job.K, x + ((long)b * job.K), y + ((long)b * job.N) + r);
            }
        }

        for (; r < to; r++)
        {
            for (int b = 0; b < job.Rows; b++)
            {
                y[((long)b * job.N) + r] = Tail(w + ((long)r * job.K), x + ((long)b * job.K), 0, job.K);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void Dot4(float* w, int k, float* x, float* y)
    {
        int lanes = Vector<float>.Count;
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int i = 0;
        for (; i + lanes <= k; i += lanes)
        {
            var xv = Load(x + i);
            a0 = Vector.FusedMultiplyAdd(Load(w + i), xv, a0);
            a1 = Vector.FusedMultiplyAdd(Load(w + k + i), xv, a1);
            a2 = Vector.FusedMultiplyAdd(Load(w + (2L * k) + i), xv, a2);
            a3 = Vector.FusedMultiplyAdd(Load(w + (3L * k) + i), xv, a3);
        }

        y[0] = Vector.Sum(a0) + Tail(w, x, i, k);
        y[1] = Vector.Sum(a1) + Tail(w + k, x, i, k);
        y[2] = Vector.Sum(a2) + Tail(w + (2L * k), x, i, k);
        y[3] = Vector.Sum(a3) + Tail(w + (3L * k), x, i, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe float Tail(float* w, float* x, int from, int k)
    {
        float sum = 0;
        for (int i = from; i < k; i++)
        {
            sum += w[i] * x[i];
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector<float> Load(float* at) => Unsafe.ReadUnaligned<Vector<float>>(at);
}
