using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// y = x Wᵀ (+ b) for the few-row inputs of recurrent decoding (one row per decoding sequence, up to
/// <see cref="MaxRows"/>), with float32 or bfloat16 weights on the CPU.
/// <para>
/// Decoding reads every weight once per step, so at one row its speed is the rate at which weights stream from
/// memory: one weight row at a time, front to back, is a single sequential stream the hardware prefetcher
/// follows at the machine's read rate (~29-32 GB/s of the 34 a plain read reaches on a 2-core EPYC; four rows
/// advancing together - four streams - reached ~24, libtorch's GEMV ~16-20). With more rows the inputs go two
/// at a time past four weight rows (a 4 x 2 register tile: each weight vector is loaded and widened once for
/// two inputs), over panels of weight rows that stay in L2.
/// </para>
/// <para>
/// Every output (b, n) is summed the same way whichever kernel, tile, panel or thread computes it - two
/// accumulators (first and second half of each 2·lanes block), one fixed horizontal sum, one scalar tail - so a
/// row's result does not depend on how many rows share the call: a request's logits do not depend on its
/// decode batch (up to <see cref="MaxRows"/>). bf16 weights are read as 32-bit pairs and split into float32 in
/// registers; the inputs are staged as [even | odd] halves to match. Registers are the widest the CPU has
/// (<see cref="SimdWidth"/>). Work is split over <see cref="KernelWorkers"/> on whole groups of four weight rows.
/// </para>
/// </summary>
internal static class CpuGemv
{
    /// <summary>
    /// Inputs with more rows than this go to libtorch. Measured at d_model 2560 in bf16 (2-core EPYC, ms per
    /// call, managed / libtorch): in_proj 1 row 1.65 / 4.15, 2 rows 1.89 / 3.47, 4 rows 2.33 / 4.09, 8 rows
    /// 3.33 / 2.63, 16 rows 5.56 / 3.69: from 8 rows on oneDNN's bf16 dot-product GEMM (twice the FMA rate .NET
    /// can reach: it exposes no AVX512-BF16) wins, and it wins by more on prompts.
    /// </summary>
    public const int MaxRows = 4;

    /// <summary>Weight bytes per panel of a many-row call: half a 1 MiB L2, the rest for the inputs.</summary>
    private const long PanelBytes = 512 << 10;

    /// <summary>Below this much work (weight bytes x rows / 4) one thread is faster than waking another.</summary>
    private const long ParallelThresholdBytes = 1 << 20;

    /// <summary>True when <see cref="Linear"/> handles this input, weight and bias.</summary>
    public static bool Supports(Tensor input, Tensor weight, Tensor? bias = null) =>
        weight.device_type == DeviceType.CPU && input.device_type == DeviceType.CPU
        && weight.dim() == 2 && weight.is_contiguous()
        && weight.NumberOfElements < int.MaxValue / sizeof(float)
        && (weight.dtype == ScalarType.Float32 || (weight.dtype == ScalarType.BFloat16 && weight.shape[1] % 2 == 0))
        && input.dtype == weight.dtype
        && input.dim() >= 1 && input.shape[^1] == weight.shape[1] && input.NumberOfElements > 0
        && input.NumberOfElements / weight.shape[1] <= MaxRows
        && (bias is null || (bias.device_type == DeviceType.CPU && bias.dtype == weight.dtype && bias.dim() == 1 && bias.shape[0] == weight.shape[0]));

    /// <summary>x [..., K] · W [N, K]ᵀ (+ b [N]) -> [..., N] in the weight dtype. Check <see cref="Supports"/> first.</summary>
    /// <param name="input">[..., K].</param>
    /// <param name="weight">[N, K].</param>
    /// <param name="bias">[N], or null.</param>
    /// <param name="simdBits">Register width (tests run the narrower widths other CPUs get); the CPU's widest by default.</param>
    public static unsafe Tensor Linear(Tensor input, Tensor weight, Tensor? bias, int? simdBits = null)
    {
        int n = (int)weight.shape[0], k = (int)weight.shape[1];
        int rows = (int)(input.NumberOfElements / k);
        bool bf16 = weight.dtype == ScalarType.BFloat16;

        using var source = input.contiguous();                                   // [..., K]
        using var staged = bf16 ? StageBFloat16(source, rows, k) : null;         // [B, 2, K/2] float32
        using var biasData = bias?.contiguous();                                 // [N]
        var output = torch.empty([.. input.shape[..^1], n], weight.dtype, torch.CPU); // [..., N]
        var job = new Job(
            TensorMemory.Address(staged ?? source), TensorMemory.Address(weight), biasData is null ? 0 : TensorMemory.Address(biasData),
            TensorMemory.Address(output), rows, n, k, bf16, simdBits ?? SimdWidth.Bits);

        long work = weight.NumberOfElements * weight.ElementSize * Math.Max(1, rows / 4);
        KernelWorkers.Split(n, 4, (from, to) => Rows(job, (int)from, (int)to), parallel: work >= ParallelThresholdBytes);

        return output;
    }

    /// <summary>bf16 rows [B, K] to float32 [B, 2, K/2]: even elements first, then odd (the pair split of the weights).</summary>
    private static unsafe Tensor StageBFloat16(Tensor source, int rows, int k)
    {
        var staged = torch.empty([rows, 2, k / 2], ScalarType.Float32, torch.CPU); // [B,2,K/2]
        ushort* from = (ushort*)TensorMemory.Address(source);
        float* to = (float*)TensorMemory.Address(staged);
        int half = k / 2, lanes = Vector256<uint>.Count;
        for (long b = 0; b < rows; b++)
        {
            ushort* row = from + (b * k);
            float* even = to + (b * k);
            float* odd = even + half;
            int i = 0;
            for (; i + lanes <= half; i += lanes)
            {
                var pairs = Vector256.Load((uint*)row + i);
                (pairs << 16).AsSingle().Store(even + i);
                (pairs & Vector256.Create(0xFFFF0000u)).AsSingle().Store(odd + i);
            }

            for (; i < half; i++)
            {
                even[i] = BitConverter.Int32BitsToSingle(row[2 * i] << 16);
                odd[i] = BitConverter.Int32BitsToSingle(row[(2 * i) + 1] << 16);
            }
        }

        return staged;
    }

    private readonly record struct Job(nint X, nint W, nint Bias, nint Y, int Rows, int N, int K, bool BFloat16, int SimdBits);

    private static void Rows(in Job job, int from, int to)
    {
        switch (job.SimdBits, job.BFloat16)
        {
            case (512, true): Rows<Simd512, BFloat16Weights>(job, from, to); break;
            case (512, false): Rows<Simd512, Float32Weights>(job, from, to); break;
            case (256, true): Rows<Simd256, BFloat16Weights>(job, from, to); break;
            case (256, false): Rows<Simd256, Float32Weights>(job, from, to); break;
            case (_, true): Rows<Simd128, BFloat16Weights>(job, from, to); break;
            default: Rows<Simd128, Float32Weights>(job, from, to); break;
        }
    }

    /// <summary>
    /// Output features [from, to) for every input row: 4 x 2 tiles where rows pair up, single dots otherwise.
    /// With many rows the weights go in panels that stay in the core's L2 cache while every input pair passes
    /// over them (a panel is read from memory once; the inputs, re-read per panel, come from cache too).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void Rows<TV, TW>(in Job job, int from, int to)
        where TV : struct, ISimdFloat<TV>
        where TW : struct, IWeightLayout
    {
        int k = job.K, pairs = job.Rows / 2 * 2;
        long rowBytes = (long)k * TW.ElementSize;
        byte* w = (byte*)job.W;
        float* x = (float*)job.X;
        int r = from;
        if (job.Rows > 1)
        {
            int panel = (int)Math.Clamp(PanelBytes / rowBytes / 4 * 4, 4, int.MaxValue - 4);
            int tiled = from + ((to - from) / 4 * 4);
            for (int start = from; start < tiled; start += panel)
            {
                int end = Math.Min(tiled, start + panel);
                for (int b = 0; b < pairs; b += 2)
                {
                    for (int q = start; q < end; q += 4)
                    {
                        Tile4x2<TV, TW>(job, w + (q * rowBytes), x + ((long)b * k), b, q);
                    }
                }

                for (int b = pairs; b < job.Rows; b++)
                {
                    for (int q = start; q < end; q++)
                    {
                        Store<TW>(job, b, q, Dot<TV, TW>(w + (q * rowBytes), x + ((long)b * k), k));
                    }
                }
            }

            r = tiled;
        }

        for (; r < to; r++)
        {
            for (int b = 0; b < job.Rows; b++)
            {
                Store<TW>(job, b, r, Dot<TV, TW>(w + (r * rowBytes), x + ((long)b * k), k));
            }
        }
    }

    /// <summary>One weight row · one staged input row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe float Dot<TV, TW>(byte* w, float* x, int k)
        where TV : struct, ISimdFloat<TV>
        where TW : struct, IWeightLayout
    {
        int step = 2 * TV.Lanes, body = k / step * step;
        TV first = default, second = default;
        for (int i = 0; i < body; i += step)
        {
            first = TV.MultiplyAdd(TW.First<TV>(w, i), TV.Load(x + TW.FirstInput(i, k)), first);
            second = TV.MultiplyAdd(TW.Second<TV>(w, i), TV.Load(x + TW.SecondInput(i, k, TV.Lanes)), second);
        }

        return TV.SumOfBoth(first, second) + Tail<TW>(w, x, body, k);
    }

    /// <summary>Four weight rows · two staged input rows (b, b+1), written to outputs (b..b+1, r..r+3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Tile4x2<TV, TW>(in Job job, byte* w, float* x, int b, int r)
        where TV : struct, ISimdFloat<TV>
        where TW : struct, IWeightLayout
    {
        int k = job.K, step = 2 * TV.Lanes, body = k / step * step, lanes = TV.Lanes;
        long rowBytes = (long)k * TW.ElementSize;
        byte* w1 = w + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        float* x1 = x + k;
        TV f00 = default, s00 = default, f01 = default, s01 = default, f02 = default, s02 = default, f03 = default, s03 = default;
        TV f10 = default, s10 = default, f11 = default, s11 = default, f12 = default, s12 = default, f13 = default, s13 = default;
        for (int i = 0; i < body; i += step)
        {
            TV wf0 = TW.First<TV>(w, i), ws0 = TW.Second<TV>(w, i), wf1 = TW.First<TV>(w1, i), ws1 = TW.Second<TV>(w1, i);
            TV wf2 = TW.First<TV>(w2, i), ws2 = TW.Second<TV>(w2, i), wf3 = TW.First<TV>(w3, i), ws3 = TW.Second<TV>(w3, i);
            int fi = TW.FirstInput(i, k), si = TW.SecondInput(i, k, lanes);
            TV xf = TV.Load(x + fi), xs = TV.Load(x + si);
            f00 = TV.MultiplyAdd(wf0, xf, f00); s00 = TV.MultiplyAdd(ws0, xs, s00);
            f01 = TV.MultiplyAdd(wf1, xf, f01); s01 = TV.MultiplyAdd(ws1, xs, s01);
            f02 = TV.MultiplyAdd(wf2, xf, f02); s02 = TV.MultiplyAdd(ws2, xs, s02);
            f03 = TV.MultiplyAdd(wf3, xf, f03); s03 = TV.MultiplyAdd(ws3, xs, s03);
            xf = TV.Load(x1 + fi);
            xs = TV.Load(x1 + si);
            f10 = TV.MultiplyAdd(wf0, xf, f10); s10 = TV.MultiplyAdd(ws0, xs, s10);
            f11 = TV.MultiplyAdd(wf1, xf, f11); s11 = TV.MultiplyAdd(ws1, xs, s11);
            f12 = TV.MultiplyAdd(wf2, xf, f12); s12 = TV.MultiplyAdd(ws2, xs, s12);
            f13 = TV.MultiplyAdd(wf3, xf, f13); s13 = TV.MultiplyAdd(ws3, xs, s13);
        }

        Store<TW>(job, b, r, TV.SumOfBoth(f00, s00) + Tail<TW>(w, x, body, k));
        Store<TW>(job, b, r + 1, TV.SumOfBoth(f01, s01) + Tail<TW>(w1, x, body, k));
        Store<TW>(job, b, r + 2, TV.SumOfBoth(f02, s02) + Tail<TW>(w2, x, body, k));
        Store<TW>(job, b, r + 3, TV.SumOfBoth(f03, s03) + Tail<TW>(w3, x, body, k));
        Store<TW>(job, b + 1, r, TV.SumOfBoth(f10, s10) + Tail<TW>(w, x1, body, k));
        Store<TW>(job, b + 1, r + 1, TV.SumOfBoth(f11, s11) + Tail<TW>(w1, x1, body, k));
        Store<TW>(job, b + 1, r + 2, TV.SumOfBoth(f12, s12) + Tail<TW>(w2, x1, body, k));
        Store<TW>(job, b + 1, r + 3, TV.SumOfBoth(f13, s13) + Tail<TW>(w3, x1, body, k));
    }

    /// <summary>The scalar remainder of a dot product past the last whole 2·lanes block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float Tail<TW>(byte* w, float* x, int from, int k)
        where TW : struct, IWeightLayout
    {
        float sum = 0;
        for (int i = from; i < k; i++)
        {
            sum += TW.Element(w, i) * x[TW.ElementInput(i, k)];
        }

        return sum;
    }

    /// <summary>y[b, n] = value (+ bias[n]) in the output dtype (bf16: rounded to nearest even, once).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Store<TW>(in Job job, int b, int n, float value)
        where TW : struct, IWeightLayout
    {
        if (job.Bias != 0)
        {
            value += TW.Element((byte*)job.Bias, n);
        }

        long at = ((long)b * job.N) + n;
        if (TW.ElementSize == sizeof(ushort))
        {
            ((ushort*)job.Y)[at] = BFloat16Bits.Round(value);
        }
        else
        {
            ((float*)job.Y)[at] = value;
        }
    }
}

/// <summary>How a weight row's 2·lanes block splits into the two halves the dot kernels accumulate.</summary>
internal interface IWeightLayout
{
    /// <summary>Bytes per weight element.</summary>
    static abstract int ElementSize { get; }

    /// <summary>The first half of the block starting at element <paramref name="i"/>.</summary>
    static abstract unsafe TV First<TV>(byte* row, int i)
        where TV : struct, ISimdFloat<TV>;

    /// <summary>The second half of the block starting at element <paramref name="i"/>.</summary>
    static abstract unsafe TV Second<TV>(byte* row, int i)
        where TV : struct, ISimdFloat<TV>;

    /// <summary>Offset in the staged input row of the values multiplying <see cref="First"/>.</summary>
    static abstract int FirstInput(int i, int k);

    /// <summary>Offset in the staged input row of the values multiplying <see cref="Second"/>.</summary>
    static abstract int SecondInput(int i, int k, int lanes);

    /// <summary>Element <paramref name="i"/> as float32.</summary>
    static abstract unsafe float Element(byte* row, int i);

    /// <summary>Offset in the staged input row of input element <paramref name="i"/>.</summary>
    static abstract int ElementInput(int i, int k);
}

/// <summary>float32 weights: a block is two consecutive vectors; the input is used as it is.</summary>
internal readonly struct Float32Weights : IWeightLayout
{
    /// <inheritdoc />
    public static int ElementSize => sizeof(float);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe TV First<TV>(byte* row, int i)
        where TV : struct, ISimdFloat<TV> => TV.Load((float*)row + i);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe TV Second<TV>(byte* row, int i)
        where TV : struct, ISimdFloat<TV> => TV.Load((float*)row + i + TV.Lanes);

    /// <inheritdoc />
    public static int FirstInput(int i, int k) => i;

    /// <inheritdoc />
    public static int SecondInput(int i, int k, int lanes) => i + lanes;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe float Element(byte* row, int i) => ((float*)row)[i];

    /// <inheritdoc />
    public static int ElementInput(int i, int k) => i;
}

/// <summary>bf16 weights: a block's even elements, then its odd ones; the input is staged as [even | odd] halves.</summary>
internal readonly struct BFloat16Weights : IWeightLayout
{
    /// <inheritdoc />
    public static int ElementSize => sizeof(ushort);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe TV First<TV>(byte* row, int i)
        where TV : struct, ISimdFloat<TV> => TV.EvenBFloat16((ushort*)row + i);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe TV Second<TV>(byte* row, int i)
        where TV : struct, ISimdFloat<TV> => TV.OddBFloat16((ushort*)row + i);

    /// <inheritdoc />
    public static int FirstInput(int i, int k) => i / 2;

    /// <inheritdoc />
    public static int SecondInput(int i, int k, int lanes) => (k / 2) + (i / 2);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe float Element(byte* row, int i) => BitConverter.Int32BitsToSingle(((ushort*)row)[i] << 16);

    /// <inheritdoc />
    public static int ElementInput(int i, int k) => ((i & 1) * (k / 2)) + (i / 2);
}

/// <summary>float32 to bfloat16 bits as <c>c10::BFloat16</c> rounds: to nearest, ties to even; NaN stays NaN.</summary>
internal static class BFloat16Bits
{
    /// <summary>The bf16 bit pattern nearest to <paramref name="value"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Round(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u)
        {
            return (ushort)((bits >> 16) | 0x40);                                // quiet NaN
        }

        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
}
