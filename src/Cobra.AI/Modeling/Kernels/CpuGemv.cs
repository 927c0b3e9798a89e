using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// y = x Wᵀ (+ b) for the few-row inputs of recurrent decoding, with float32 weights on the CPU. Decoding
/// reads every weight once per token, so its speed is the rate at which weights stream from memory:
/// libtorch's float32 GEMV streams uncached weights at ~18-20 GB/s on a 2-core EPYC, this kernel (four rows
/// per pass, so four memory streams are in flight) at ~25-30 GB/s. bfloat16 weights are read as 32-bit pairs
/// and split into float32 in registers. Work is split over <see cref="KernelWorkers"/>, whose threads are
/// awake when the next kernel starts (waking pool threads per call cost more than the split saved).
/// </summary>
internal static class CpuGemv
{
    /// <summary>
    /// Inputs with more rows than this go to libtorch's GEMM, which reuses each weight row. Up to four rows this
    /// kernel computes every row exactly as a lone row, so a request's logits do not depend on how many others
    /// share its decode batch (libtorch's GEMM at 2-4 rows is ~20% faster in bf16 at d_model 2560 - 65 vs 81 ms
    /// a step at 2 rows - but rounds differently from its single-row path).
    /// </summary>
    public const int MaxRows = 4;

    /// <summary>Below this many weight bytes one thread is faster than waking another.</summary>
    private const long ParallelThresholdBytes = 1 << 20;

    /// <summary>True when <see cref="Linear"/> handles this input and weight.</summary>
    public static bool Supports(Tensor input, Tensor weight) =>
        weight.device_type == DeviceType.CPU && input.device_type == DeviceType.CPU
        && weight.dim() == 2 && weight.is_contiguous()
        && weight.NumberOfElements < int.MaxValue / sizeof(float)
        && (weight.dtype == ScalarType.Float32 || (weight.dtype == ScalarType.BFloat16 && weight.shape[1] % 2 == 0))
        && input.dtype == weight.dtype
        && input.shape[^1] == weight.shape[1]
        && input.NumberOfElements / weight.shape[1] <= MaxRows;

    /// <summary>x [..., K] · W [N, K]ᵀ (+ b [N]) -> [..., N]. Check <see cref="Supports"/> first.</summary>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias)
    {
        long n = weight.shape[0], k = weight.shape[1];
        int rows = (int)(input.NumberOfElements / k);
        bool bf16 = weight.dtype == ScalarType.BFloat16;

        // bf16 rows are read as 32-bit pairs (even element in the low half): x is split into [even | odd] to match.
        using var x = bf16
            ? input.reshape(rows, k / 2, 2).to(ScalarType.Float32).transpose(1, 2).contiguous() // [B,2,K/2]
            : input.reshape(rows, k).contiguous();                               // [B,K]
        var y = torch.empty([rows, n], ScalarType.Float32, torch.CPU);           // [B,N]
        var job = new Job(TensorMemory.Address(x), TensorMemory.Address(weight), TensorMemory.Address(y), rows, (int)n, (int)k, bf16);

        long weightBytes = weight.NumberOfElements * weight.ElementSize;
        if (weightBytes < ParallelThresholdBytes)
        {
            RowRange(job, 0, job.N);
        }
        else
        {
            // Boundaries on whole groups of four rows: each row is summed the same way whatever the thread count.
            int groups = (job.N + 3) / 4;
            KernelWorkers.Run((t, parts) => RowRange(job, Math.Min(job.N, (int)((long)groups * t / parts) * 4), Math.Min(job.N, (int)((long)groups * (t + 1) / parts) * 4)));
        }

        if (bias is not null)
        {
            y.add_(bias);
        }

        var shaped = y.view([.. input.shape[..^1], n]);
        return bf16 ? shaped.to(ScalarType.BFloat16) : shaped;
    }

    private readonly record struct Job(nint X, nint W, nint Y, int Rows, int N, int K, bool BFloat16);

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
                if (job.BFloat16)
                {
                    Dot4BFloat16((ushort*)job.W + ((long)r * job.K), job.K, x + ((long)b * job.K), y + ((long)b * job.N) + r);
                }
                else
                {
                    Dot4(w + ((long)r * job.K), job.K, x + ((long)b * job.K), y + ((long)b * job.N) + r);
                }
            }
        }

        for (; r < to; r++)
        {
            for (int b = 0; b < job.Rows; b++)
            {
                y[((long)b * job.N) + r] = job.BFloat16
                    ? TailBFloat16((ushort*)job.W + ((long)r * job.K), x + ((long)b * job.K), 0, job.K)
                    : Tail(w + ((long)r * job.K), x + ((long)b * job.K), 0, job.K);
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
    private static unsafe void Dot4BFloat16(ushort* w, int k, float* x, float* y)
    {
        int lanes = Vector<float>.Count;
        float* xEven = x;
        float* xOdd = x + (k / 2);
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int i = 0;
        for (; i + (2 * lanes) <= k; i += 2 * lanes)
        {
            var even = Load(xEven + (i / 2));
            var odd = Load(xOdd + (i / 2));
            a0 = FmaPairs(w + i, even, odd, a0);
            a1 = FmaPairs(w + k + i, even, odd, a1);
            a2 = FmaPairs(w + (2L * k) + i, even, odd, a2);
            a3 = FmaPairs(w + (3L * k) + i, even, odd, a3);
        }

        y[0] = Vector.Sum(a0) + TailBFloat16(w, x, i, k);
        y[1] = Vector.Sum(a1) + TailBFloat16(w + k, x, i, k);
        y[2] = Vector.Sum(a2) + TailBFloat16(w + (2L * k), x, i, k);
        y[3] = Vector.Sum(a3) + TailBFloat16(w + (3L * k), x, i, k);
    }

    /// <summary>
    /// acc + w · x for bf16 w read as 32-bit pairs: a bf16 is the top half of a float32, so the even element is
    /// the pair shifted left 16 and the odd one the pair with its low half cleared.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector<float> FmaPairs(ushort* w, Vector<float> xEven, Vector<float> xOdd, Vector<float> acc)
    {
        var pairs = Unsafe.ReadUnaligned<Vector<uint>>(w);
        acc = Vector.FusedMultiplyAdd(Vector.AsVectorSingle(pairs << 16), xEven, acc);
        return Vector.FusedMultiplyAdd(Vector.AsVectorSingle(pairs & new Vector<uint>(0xFFFF0000u)), xOdd, acc);
    }

    /// <summary>Scalar remainder of a bf16 row; <paramref name="x"/> is split into [even | odd] halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe float TailBFloat16(ushort* w, float* x, int from, int k)
    {
        float sum = 0;
        for (int i = from; i < k; i++)
        {
            sum += BitConverter.Int32BitsToSingle(w[i] << 16) * x[((i & 1) * (k / 2)) + (i / 2)];
        }

        return sum;
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
