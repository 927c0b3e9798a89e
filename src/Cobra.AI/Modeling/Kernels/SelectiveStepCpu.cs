using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// The elementwise parts of one recurrent Mamba step (<see cref="Mamba.MambaMixer.Step"/>) as two fused CPU
/// kernels, so a decode step runs a handful of calls per layer instead of ~30 torch ops, each of which
/// allocated and streamed a [B, d_inner, d_state] temporary:
/// <list type="number">
/// <item><see cref="ConvStep"/>: shift the conv window, append x, depthwise conv, SiLU -> x̃ (model dtype).</item>
/// <item><see cref="SsmStep"/>: Δ = softplus(Δraw + b_Δ); h = exp(ΔA) h + Δ B x̃; y = C·h + D x̃; y · SiLU(z).</item>
/// </list>
/// Same arithmetic as the torch-op path (float32, the cached state read rounded to the model dtype, the new
/// state kept in float32), which stays the device-generic path and the oracle the tests hold these to; like the
/// prefill's scan it takes exp(ΔA) as 2^(Δ·A log₂e) with A log₂e staged once per call (7 multiply-adds where exp
/// takes 12: the update is bound by its arithmetic, not the state's memory: 4 rows, whose states fit in L2, cost
/// per row what 64 rows do).
/// Lanes run over d_state (16 = one or two registers) in the state update and over channels in the
/// transcendentals around it; at 512 bits, 16 channels go together through both kernels (the conv's windows
/// transposed to one register per tap, the state update's C·h sums reduced across registers: ~3x faster at
/// 16-64 rows, identical results). Channels are split over <see cref="KernelWorkers"/> in whole groups of 16.
/// </summary>
internal static class SelectiveStepCpu
{
    /// <summary>Below this many (row, channel) pairs one thread is faster than waking another.</summary>
    private const int ParallelThreshold = 2048;

    /// <summary>Channels staged together (a multiple of every vector width).</summary>
    private const int Tile = 64;

    /// <summary>True when the kernels handle these tensors (CPU, float32 or bf16, d_state a multiple of the lanes).</summary>
    public static bool Supports(Tensor hidden, Tensor convState, Tensor ssmState) =>
        hidden.device_type == DeviceType.CPU && convState.device_type == DeviceType.CPU && ssmState.device_type == DeviceType.CPU
        && (hidden.dtype == ScalarType.Float32 || hidden.dtype == ScalarType.BFloat16)
        && convState.dtype == ScalarType.Float32 && ssmState.dtype == ScalarType.Float32
        && convState.is_contiguous() && ssmState.is_contiguous()
        && ssmState.shape[2] % Vector<float>.Count == 0;

    /// <summary>
    /// Conv step for x [B, Di] (the first half of in_proj's output, model dtype, any row stride): the window
    /// <paramref name="convState"/> [B, Di, K] (float32) shifts left by one and takes x; returns
    /// SiLU(Σ window · w + b) [B, Di] in the model dtype. <paramref name="weight"/> [Di, 1, K], <paramref name="bias"/> [Di].
    /// </summary>
    public static unsafe Tensor ConvStep(Tensor xz, Tensor convState, Tensor weight, Tensor bias, int? simdBits = null)
    {
        int rows = (int)convState.shape[0], channels = (int)convState.shape[1], width = (int)convState.shape[2];
        bool bf16 = xz.dtype == ScalarType.BFloat16;
        using var source = xz.contiguous();                                      // [B,2Di]
        using var w = weight.contiguous();                                       // [Di,1,K]
        using var b = bias.contiguous();                                         // [Di]
        var output = torch.empty([rows, channels], xz.dtype, torch.CPU);         // [B,Di]
        var job = new ConvJob(TensorMemory.Address(source), (int)source.shape[1], TensorMemory.Address(convState), TensorMemory.Address(w),
            TensorMemory.Address(b), TensorMemory.Address(output), rows, channels, width, bf16,
            Wide: (simdBits ?? SimdWidth.Bits) >= 512 && Avx512F.IsSupported);
        Split(rows, channels, (from, to) => ConvChannels(job, from, to));
        return output;
    }

    /// <summary>
    /// SSM step: updates <paramref name="ssmState"/> [B, Di, N] (float32) in place and returns the gated output
    /// [B, Di] in the model dtype. <paramref name="xConv"/> [B, Di], <paramref name="deltaRaw"/> [B, Di] (x_proj ·
    /// dt_proj without its bias), <paramref name="bc"/> = x_proj's output [B, R+2N] (B and C are its last 2N
    /// columns), z = the second half of <paramref name="xz"/> [B, 2Di]; all in the model dtype.
    /// <paramref name="aLog"/> [Di, N], <paramref name="dSkip"/> [Di], <paramref name="deltaBias"/> [Di], in the model dtype.
    /// <paramref name="simdBits"/>: at 512 (the default where the CPU has it) d_state-16 channels go 16 at a time
    /// (<see cref="SsmGroups512"/>, ~3x faster at 16-64 rows), with the same results; tests run both.
    /// </summary>
    public static unsafe Tensor SsmStep(Tensor xConv, Tensor deltaRaw, Tensor bc, Tensor xz, Tensor ssmState, Tensor aLog, Tensor dSkip, Tensor deltaBias, int? simdBits = null)
    {
        int rows = (int)ssmState.shape[0], channels = (int)ssmState.shape[1], states = (int)ssmState.shape[2];
        bool bf16 = xConv.dtype == ScalarType.BFloat16;
        using var x = xConv.contiguous();                                        // [B,Di]
        using var delta = deltaRaw.contiguous();                                 // [B,Di]
        using var projected = bc.contiguous();                                   // [B,R+2N]
        using var gates = xz.contiguous();                                       // [B,2Di]
        using var a = aLog.contiguous();                                         // [Di,N]
        using var d = dSkip.contiguous();                                        // [Di]
        using var db = deltaBias.contiguous();                                   // [Di]
        var output = torch.empty([rows, channels], xConv.dtype, torch.CPU);     // [B,Di]
        var job = new SsmJob(
            TensorMemory.Address(x), TensorMemory.Address(delta), TensorMemory.Address(projected), (int)projected.shape[1],
            TensorMemory.Address(gates), TensorMemory.Address(ssmState), TensorMemory.Address(a), TensorMemory.Address(d), TensorMemory.Address(db),
            TensorMemory.Address(output), rows, channels, states, bf16,
            Wide: (simdBits ?? SimdWidth.Bits) >= 512 && Vector512.IsHardwareAccelerated && states == 16 && Vector<float>.Count == 8);
        Split(rows, channels, (from, to) => SsmChannels(job, from, to));
        return output;
    }

    private readonly record struct ConvJob(nint Xz, int XzStride, nint Window, nint Weight, nint Bias, nint Output, int Rows, int Channels, int Width, bool BFloat16, bool Wide);

    private readonly record struct SsmJob(
        nint X, nint Delta, nint Projected, int ProjectedStride, nint Xz, nint State, nint A, nint D, nint DeltaBias, nint Output,
        int Rows, int Channels, int States, bool BFloat16, bool Wide);

    private static void Split(int rows, int channels, Action<int, int> body) =>
        KernelWorkers.Split(channels, 16, (from, to) => body((int)from, (int)to), parallel: (long)rows * channels >= ParallelThreshold); // whole 16-channel groups per worker

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void ConvChannels(in ConvJob job, int from, int to)
    {
        if (job.Width == 4 && Sse.IsSupported)
        {
            int channels = to - from, weights = 16 * ((channels + 3) / 4);       // whole groups of four
            int grouped = job.Wide ? from + (channels / 16 * 16) : from;         // groups of 16 at 512 bits, then of four
            float[] staged = ArrayPool<float>.Shared.Rent(weights + channels);
            try
            {
                fixed (float* buffer = staged)
                {
                    int wide = grouped - from;
                    StageConvConstants(job, from, grouped, 16, weightsByTap: buffer, bias: buffer + weights);
                    StageConvConstants(job, grouped, to, 4, weightsByTap: buffer + (4 * wide), bias: buffer + weights + wide);
                    ConvGroups512(job, from, grouped, buffer, buffer + weights);
                    ConvChannelsWidth4(job, grouped, to, buffer + (4 * wide), buffer + weights + wide);
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(staged);
            }

            return;
        }

        float* sums = stackalloc float[Tile];                                    // a tile's pre-activations
        for (int b = 0; b < job.Rows; b++)                                      // rows outermost: each row's window is one stream
        {
            long row = (long)b * job.Channels;
            for (int c0 = from; c0 < to; c0 += Tile)
            {
                int count = Math.Min(Tile, to - c0);
                for (int i = 0; i < count; i++)
                {
                    sums[i] = ConvChannel(job, b, c0 + i);
                }

                ForLanes(sums, count, v => KernelMath.Silu(v));
                for (int i = 0; i < count; i++)
                {
                    KernelMath.Write(job.Output, row + c0 + i, sums[i], job.BFloat16);
                }
            }
        }
    }

    /// <summary>One channel's step, any width: shift the window, append x, return b + Σ window · w (in that order).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float ConvChannel(in ConvJob job, int b, int c)
    {
        float* window = (float*)job.Window + ((((long)b * job.Channels) + c) * job.Width);  // [K]
        long w = (long)c * job.Width;                                                     // weight row [K]
        for (int k = 0; k < job.Width - 1; k++)
        {
            window[k] = window[k + 1];
        }

        window[job.Width - 1] = KernelMath.Read(job.Xz, ((long)b * job.XzStride) + c, job.BFloat16);
        float sum = KernelMath.Read(job.Bias, c, job.BFloat16);
        for (int k = 0; k < job.Width; k++)
        {
            sum += window[k] * KernelMath.Read(job.Weight, w + k, job.BFloat16);
        }

        return sum;
    }

    /// <summary>
    /// The weights of channels [from, to) as [group of <paramref name="size"/> channels][tap][lane], and the bias as
    /// [group][lane], float32; a group's lanes hold its channels in the order the in-lane transpose leaves them
    /// (<see cref="LaneOfChannel"/>: identity for groups of four).
    /// </summary>
    private static unsafe void StageConvConstants(in ConvJob job, int from, int to, int size, float* weightsByTap, float* bias)
    {
        for (int c = from; c < to; c++)
        {
            int group = (c - from) / size, lane = size == 16 ? LaneOfChannel[(c - from) % 16] : (c - from) % size;
            for (int k = 0; k < 4; k++)
            {
                weightsByTap[(group * 4 * size) + (k * size) + lane] = KernelMath.Read(job.Weight, ((long)c * 4) + k, job.BFloat16);
            }

            bias[(group * size) + lane] = KernelMath.Read(job.Bias, c, job.BFloat16);
        }
    }

    /// <summary>
    /// Where a 16-channel group's channel o lands after the in-lane 4 x 4 transpose of its four window registers:
    /// 128-bit block o mod 4, element o / 4. The map is its own inverse, so one table permutes both ways.
    /// </summary>
    private static ReadOnlySpan<int> LaneOfChannel => [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

    /// <summary>
    /// <see cref="ConvChannelsWidth4"/> at 512 bits, 16 channels [from, to) at a time (to - from a multiple of 16):
    /// the group's windows are four registers, transposed within each 128-bit block (four groups of four at once),
    /// so each tap is one register across the 16 channels (in <see cref="LaneOfChannel"/> order, which x and the
    /// sums are permuted into and out of); the same sums in the same order: identical results.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void ConvGroups512(in ConvJob job, int from, int to, float* weightsByTap, float* bias)
    {
        bool bf16 = job.BFloat16;
        var order = Vector512.Create(LaneOfChannel);
        for (int b = 0; b < job.Rows; b++)
        {
            long row = (long)b * job.Channels, xRow = (long)b * job.XzStride;
            for (int c0 = from; c0 < to; c0 += 16)
            {
                int group = (c0 - from) / 16;
                float* window = (float*)job.Window + ((row + c0) * 4);                            // [16 channels, 4 taps]
                var (tap0, tap1, tap2, tap3) = Transpose(Vector512.Load(window), Vector512.Load(window + 16), Vector512.Load(window + 32), Vector512.Load(window + 48));
                var x = Avx512F.PermuteVar16x32(KernelMath.LoadWide512(job.Xz, xRow + c0, bf16), order);    // [16] in lane order
                float* w = weightsByTap + (group * 64);
                var sum = Vector512.Load(bias + (group * 16));                                     // the window after the shift: tap1, tap2, tap3, x
                sum += tap1 * Vector512.Load(w);
                sum += tap2 * Vector512.Load(w + 16);
                sum += tap3 * Vector512.Load(w + 32);
                sum += x * Vector512.Load(w + 48);
                var (first, second, third, fourth) = Transpose(tap1, tap2, tap3, x);
                first.Store(window);
                second.Store(window + 16);
                third.Store(window + 32);
                fourth.Store(window + 48);
                KernelMath.StoreNarrow512(KernelMath.Silu(Avx512F.PermuteVar16x32(sum, order)), job.Output, row + c0, bf16);
            }
        }
    }

    /// <summary><see cref="Transpose(Vector128{float}, Vector128{float}, Vector128{float}, Vector128{float})"/> in each of the four 128-bit blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<float>, Vector512<float>, Vector512<float>, Vector512<float>) Transpose(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        var abLow = Avx512F.UnpackLow(a, b).AsDouble();                          // a0 b0 a1 b1 (per block)
        var cdLow = Avx512F.UnpackLow(c, d).AsDouble();                          // c0 d0 c1 d1
        var abHigh = Avx512F.UnpackHigh(a, b).AsDouble();                        // a2 b2 a3 b3
        var cdHigh = Avx512F.UnpackHigh(c, d).AsDouble();                        // c2 d2 c3 d3
        return (Avx512F.UnpackLow(abLow, cdLow).AsSingle(), Avx512F.UnpackHigh(abLow, cdLow).AsSingle(),
            Avx512F.UnpackLow(abHigh, cdHigh).AsSingle(), Avx512F.UnpackHigh(abHigh, cdHigh).AsSingle());
    }

    /// <summary>
    /// The d_conv = 4 step (Mamba's), four channels at a time: their windows (16 contiguous floats) are transposed
    /// so each tap is one vector across the channels, shifted by renaming, summed in the scalar path's order
    /// (b + w0·x0 + w1·x1 + w2·x2 + w3·x3, no fused multiply-adds: bitwise the scalar result) and transposed back.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void ConvChannelsWidth4(in ConvJob job, int from, int to, float* weightsByTap, float* bias)
    {
        float* sums = stackalloc float[Tile];                                    // a tile's pre-activations
        for (int b = 0; b < job.Rows; b++)
        {
            long row = (long)b * job.Channels, xRow = (long)b * job.XzStride;
            for (int c0 = from; c0 < to; c0 += Tile)
            {
                int count = Math.Min(Tile, to - c0), i = 0;
                for (; i + 4 <= count; i += 4)
                {
                    int c = c0 + i, group = (c - from) / 4;
                    float* window = (float*)job.Window + ((row + c) * 4);                        // [4 channels, 4 taps]
                    var (tap0, tap1, tap2, tap3) = Transpose(Sse.LoadVector128(window), Sse.LoadVector128(window + 4), Sse.LoadVector128(window + 8), Sse.LoadVector128(window + 12));
                    var x = Vector128.Create(
                        KernelMath.Read(job.Xz, xRow + c, job.BFloat16), KernelMath.Read(job.Xz, xRow + c + 1, job.BFloat16),
                        KernelMath.Read(job.Xz, xRow + c + 2, job.BFloat16), KernelMath.Read(job.Xz, xRow + c + 3, job.BFloat16));
                    float* w = weightsByTap + (group * 16);
                    var sum = Sse.LoadVector128(bias + (c - from));                                // the window after the shift: tap1, tap2, tap3, x
                    sum += tap1 * Sse.LoadVector128(w);
                    sum += tap2 * Sse.LoadVector128(w + 4);
                    sum += tap3 * Sse.LoadVector128(w + 8);
                    sum += x * Sse.LoadVector128(w + 12);
                    sum.Store(sums + i);
                    var (first, second, third, fourth) = Transpose(tap1, tap2, tap3, x);
                    first.Store(window);
                    second.Store(window + 4);
                    third.Store(window + 8);
                    fourth.Store(window + 12);
                }

                for (; i < count; i++)
                {
                    sums[i] = ConvChannel(job, b, c0 + i);
                }

                ForLanes(sums, count, v => KernelMath.Silu(v));
                for (int k = 0; k < count; k++)
                {
                    KernelMath.Write(job.Output, row + c0 + k, sums[k], job.BFloat16);
                }
            }
        }
    }

    /// <summary>4 x 4 transpose: rows a, b, c, d in, columns out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector128<float>, Vector128<float>, Vector128<float>, Vector128<float>) Transpose(Vector128<float> a, Vector128<float> b, Vector128<float> c, Vector128<float> d)
    {
        var abLow = Sse.UnpackLow(a, b);                                         // a0 b0 a1 b1
        var cdLow = Sse.UnpackLow(c, d);                                         // c0 d0 c1 d1
        var abHigh = Sse.UnpackHigh(a, b);                                       // a2 b2 a3 b3
        var cdHigh = Sse.UnpackHigh(c, d);                                       // c2 d2 c3 d3
        return (Sse.MoveLowToHigh(abLow, cdLow), Sse.MoveHighToLow(cdLow, abLow), Sse.MoveLowToHigh(abHigh, cdHigh), Sse.MoveHighToLow(cdHigh, abHigh));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void SsmChannels(in SsmJob job, int from, int to)
    {
        int states = job.States, channels = to - from;
        int staged = job.Rows * states;
        float[] perChannel = ArrayPool<float>.Shared.Rent((channels * (states + 2)) + (2 * staged));
        try
        {
            fixed (float* buffer = perChannel)
            {
                float* a = buffer, deltaBias = a + (channels * states), dSkip = deltaBias + channels;
                float* bRows = dSkip + channels, cRows = bRows + staged;
                StageConstants(job, from, to, a, deltaBias, dSkip);
                StageBC(job, bRows, cRows);
                int grouped = job.Wide ? from + ((to - from) / 16 * 16) : from;   // 16-channel groups, then the rest one by one
                SsmGroups512(job, from, grouped, a, deltaBias, dSkip, bRows, cRows);
                SsmChannelTiles(job, from, grouped, to, a, deltaBias, dSkip, bRows, cRows);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(perChannel);
        }
    }

    /// <summary>A·log₂e [channels, N] (A = −exp(A_log)), b_Δ and D for channels [from, to), read once per call (every row uses them).</summary>
    private static unsafe void StageConstants(in SsmJob job, int from, int to, float* a, float* deltaBias, float* dSkip)
    {
        int states = job.States, channels = to - from;
        KernelMath.NegateExp(job.A, (long)from * states, job.BFloat16, a, channels * states, job.Wide, KernelMath.Log2E);
        for (int i = 0; i < channels; i++)
        {
            deltaBias[i] = KernelMath.Read(job.DeltaBias, from + i, job.BFloat16);
            dSkip[i] = KernelMath.Read(job.D, from + i, job.BFloat16);
        }
    }

    /// <summary>Each row's B and C [N] (the last 2N columns of x_proj's output) as float32.</summary>
    private static unsafe void StageBC(in SsmJob job, float* bRows, float* cRows)
    {
        int states = job.States;
        for (int b = 0; b < job.Rows; b++)
        {
            long projectedRow = ((long)b * job.ProjectedStride) + job.ProjectedStride - (2 * states);
            for (int n = 0; n < states; n++)
            {
                bRows[(b * states) + n] = KernelMath.Read(job.Projected, projectedRow + n, job.BFloat16);
                cRows[(b * states) + n] = KernelMath.Read(job.Projected, projectedRow + states + n, job.BFloat16);
            }
        }
    }

    /// <summary>
    /// The d_state-16 update at 512 bits, 16 channels [from, to) at a time (to - from a multiple of 16): softplus(Δ),
    /// SiLU(z), D x̃ and the output are one register across the group; each channel's state is one register (h, A
    /// over d_state); the 16 channels' C·h products are summed together by <see cref="SumLanes"/>: the additions of
    /// <see cref="SsmChannelTiles"/>'s per-channel sum (the two 8-lane halves, then <see cref="Vector.Sum{T}(Vector{T})"/>'s
    /// pairwise order) carried out across registers, in the same order: identical results, ~3 instead of ~13
    /// instructions a channel. <paramref name="from"/> is where the staged constants start.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void SsmGroups512(in SsmJob job, int from, int to, float* a, float* deltaBias, float* dSkip, float* bRows, float* cRows)
    {
        bool bf16 = job.BFloat16;
        float* lanes = stackalloc float[32];                                     // the group's Δ, then Δ x̃, broadcast per channel
        for (int b = 0; b < job.Rows; b++)
        {
            var b16 = Vector512.Load(bRows + (b * 16));                          // B [N]
            var c16 = Vector512.Load(cRows + (b * 16));                          // C [N]
            long row = (long)b * job.Channels;                                   // element (b, 0) of a [B, Di] tensor
            long zRow = row + ((long)(b + 1) * job.Channels);                    // xz[b, Di]
            for (int c0 = from; c0 < to; c0 += 16)
            {
                int t0 = c0 - from;
                var delta = KernelMath.Softplus(KernelMath.LoadWide512(job.Delta, row + c0, bf16) + Vector512.Load(deltaBias + t0)); // Δ [16 channels]
                var x = KernelMath.LoadWide512(job.X, row + c0, bf16);                                                              // x̃
                delta.Store(lanes);
                (delta * x).Store(lanes + 16);
                float* h = (float*)job.State + ((row + c0) * 16);                // [16 channels, N]
                float* ai = a + (t0 * 16);                                       // A [16 channels, N]
                var sums = SumLanes(
                    Half(h, ai, lanes, 0, b16, c16, bf16),
                    Half(h, ai, lanes, 8, b16, c16, bf16));                      // C·h [16 channels]
                var gate = KernelMath.Silu(KernelMath.LoadWide512(job.Xz, zRow + c0, bf16));
                KernelMath.StoreNarrow512((sums + (x * Vector512.Load(dSkip + t0))) * gate, job.Output, row + c0, bf16);
            }
        }
    }

    /// <summary>
    /// Channels k0 .. k0 + 7 of a group: updates their states and returns their C·h products folded and summed
    /// pairwise, laid out for <see cref="SumLanes"/> (the pairs (k, k + 4) first, so the group's sums end in channel order).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<float> Half(float* h, float* a, float* lanes, int k0, Vector512<float> b16, Vector512<float> c16, bool bf16)
    {
        var u0 = Fold(UpdateChannel(h, a, lanes, k0, b16, c16, bf16), UpdateChannel(h, a, lanes, k0 + 4, b16, c16, bf16));
        var u1 = Fold(UpdateChannel(h, a, lanes, k0 + 1, b16, c16, bf16), UpdateChannel(h, a, lanes, k0 + 5, b16, c16, bf16));
        var u2 = Fold(UpdateChannel(h, a, lanes, k0 + 2, b16, c16, bf16), UpdateChannel(h, a, lanes, k0 + 6, b16, c16, bf16));
        var u3 = Fold(UpdateChannel(h, a, lanes, k0 + 3, b16, c16, bf16), UpdateChannel(h, a, lanes, k0 + 7, b16, c16, bf16));
        return PairSums(PairSums(u0, u1), PairSums(u2, u3));
    }

    /// <summary>Channel k of a group: h ← Δ x̃ B + exp(ΔA) h (the cached h read as its dtype holds it); returns C h [N].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<float> UpdateChannel(float* h, float* a, float* lanes, int k, Vector512<float> b16, Vector512<float> c16, bool bf16)
    {
        float* state = h + (k * 16);
        var decay = KernelMath.Pow2(Vector512.Create(lanes[k]) * Vector512.Load(a + (k * 16)));  // exp(ΔA) = 2^(Δ·A log₂e)
        var held = Vector512.Load(state);
        var cached = bf16 ? KernelMath.RoundToBFloat16(held) : held;
        var next = (Vector512.Create(lanes[16 + k]) * b16) + (decay * cached);                   // Δ x̃ B + exp(ΔA) h
        next.Store(state);
        return next * c16;
    }

    /// <summary>p's 16 lanes folded to 8 (low half + high half) beside q's: [p.lo + p.hi, q.lo + q.hi].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Fold(Vector512<float> p, Vector512<float> q) =>
        Avx512F.Shuffle4x128(p, q, 0x44) + Avx512F.Shuffle4x128(p, q, 0xEE);

    /// <summary>Sums of adjacent lanes, within each 128-bit block: [u0 + u1, u2 + u3, v0 + v1, v2 + v3].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> PairSums(Vector512<float> u, Vector512<float> v) =>
        Avx512F.Shuffle(u, v, 0x88) + Avx512F.Shuffle(u, v, 0xDD);

    /// <summary>The last level: each channel's two 128-bit block sums added, the 16 channels in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> SumLanes(Vector512<float> low, Vector512<float> high) =>
        Avx512F.Shuffle4x128(low, high, 0x88) + Avx512F.Shuffle4x128(low, high, 0xDD);

    /// <summary>
    /// Row by row, channels [start, to) in tiles of <see cref="Tile"/> (every channel below 512 bits, the channels
    /// after the last whole group of 16 at 512): per tile softplus(Δ) and SiLU(z) run over the whole tile at once, so
    /// the per-channel loop is the state update alone (lanes over d_state). A row's state
    /// h[b, start..to, :] is read front to back. Every transcendental runs lane-wise on staged values, so a channel's
    /// result does not depend on its tile, its lane or how the channels were split. <paramref name="from"/> is where
    /// the staged constants start.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void SsmChannelTiles(in SsmJob job, int from, int start, int to, float* a, float* deltaBias, float* dSkip, float* bRows, float* cRows)
    {
        int lanes = Vector<float>.Count, states = job.States;
        float* delta = stackalloc float[Tile];                                   // Δ per channel of the tile
        float* x = stackalloc float[Tile];                                       // x̃
        float* gate = stackalloc float[Tile];                                    // SiLU(z)
        float* y = stackalloc float[Tile];                                       // C·h, then the output
        for (int b = 0; b < job.Rows; b++)
        {
            float* bRow = bRows + (b * states), cRow = cRows + (b * states);
            for (int c0 = start; c0 < to; c0 += Tile)
            {
                int count = Math.Min(Tile, to - c0), t0 = c0 - from;
                long row = ((long)b * job.Channels) + c0;                         // element (b, c0) of a [B, Di] tensor
                long zRow = row + ((long)(b + 1) * job.Channels);                 // xz[b, Di + c0]
                for (int i = 0; i < count; i++)
                {
                    delta[i] = KernelMath.Read(job.Delta, row + i, job.BFloat16) + deltaBias[t0 + i];
                    x[i] = KernelMath.Read(job.X, row + i, job.BFloat16);
                    gate[i] = KernelMath.Read(job.Xz, zRow + i, job.BFloat16);
                }

                ForLanes(delta, count, v => KernelMath.Softplus(v));
                ForLanes(gate, count, v => KernelMath.Silu(v));
                for (int i = 0; i < count; i++)
                {
                    float* h = (float*)job.State + ((row + i) * states);                          // [N]
                    float* ai = a + ((t0 + i) * states);
                    var deltaVector = new Vector<float>(delta[i]);
                    var deltaX = new Vector<float>(delta[i] * x[i]);
                    var sum = Vector<float>.Zero;
                    for (int n = 0; n < states; n += lanes)
                    {
                        sum += Update(h + n, ai + n, bRow + n, deltaVector, deltaX, job.BFloat16) * KernelMath.Load(cRow + n); // C · h, per lane
                    }

                    y[i] = (Vector.Sum(sum) + (x[i] * dSkip[t0 + i])) * gate[i];
                }

                for (int i = 0; i < count; i++)
                {
                    KernelMath.Write(job.Output, row + i, y[i], job.BFloat16);
                }
            }
        }
    }

    /// <summary>h ← Δ x̃ B + exp(ΔA) h for one vector of states (the cached h read as its dtype holds it); returns the new h.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector<float> Update(float* h, float* a, float* b, Vector<float> delta, Vector<float> deltaX, bool bf16)
    {
        var decay = KernelMath.Pow2(delta * KernelMath.Load(a));                                                  // exp(ΔA) = 2^(Δ·A log₂e)
        var cached = bf16 ? KernelMath.RoundToBFloat16(KernelMath.Load(h)) : KernelMath.Load(h);
        var next = (deltaX * KernelMath.Load(b)) + (decay * cached);                                             // Δ x̃ B + exp(ΔA) h
        KernelMath.Store(next, h);
        return next;
    }

    /// <summary>Applies <paramref name="f"/> lane-wise to the first <paramref name="count"/> values, in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void ForLanes(float* values, int count, Func<Vector<float>, Vector<float>> f)
    {
        int lanes = Vector<float>.Count;
        for (int i = 0; i < count; i += lanes)
        {
            var v = f(KernelMath.LoadPartial(values + i, Math.Min(lanes, count - i)));
            if (count - i >= lanes)
            {
                KernelMath.Store(v, values + i);
            }
            else
            {
                for (int k = 0; k < count - i; k++)
                {
                    values[i + k] = v[k];
                }
            }
        }
    }
}
