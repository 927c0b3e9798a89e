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
/// state kept in float32), which stays the device-generic path and the oracle the tests hold these to.
/// Lanes run over d_state (16 = one or two registers) in the state update and over channels in the
/// transcendentals around it; channels are split over <see cref="KernelWorkers"/>.
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
    public static unsafe Tensor ConvStep(Tensor xz, Tensor convState, Tensor weight, Tensor bias)
    {
        int rows = (int)convState.shape[0], channels = (int)convState.shape[1], width = (int)convState.shape[2];
        bool bf16 = xz.dtype == ScalarType.BFloat16;
        using var source = xz.contiguous();                                      // [B,2Di]
        using var w = weight.contiguous();                                       // [Di,1,K]
        using var b = bias.contiguous();                                         // [Di]
        var output = torch.empty([rows, channels], xz.dtype, torch.CPU);         // [B,Di]
        var job = new ConvJob(TensorMemory.Address(source), (int)source.shape[1], TensorMemory.Address(convState), TensorMemory.Address(w),
            TensorMemory.Address(b), TensorMemory.Address(output), rows, channels, width, bf16);
        Split(rows, channels, (from, to) => ConvChannels(job, from, to));
        return output;
    }

    /// <summary>
    /// SSM step: updates <paramref name="ssmState"/> [B, Di, N] (float32) in place and returns the gated output
    /// [B, Di] in the model dtype. <paramref name="xConv"/> [B, Di], <paramref name="deltaRaw"/> [B, Di] (x_proj ·
    /// dt_proj without its bias), <paramref name="bc"/> = x_proj's output [B, R+2N] (B and C are its last 2N
    /// columns), z = the second half of <paramref name="xz"/> [B, 2Di]; all in the model dtype.
    /// <paramref name="aLog"/> [Di, N], <paramref name="dSkip"/> [Di], <paramref name="deltaBias"/> [Di], in the model dtype.
    /// <paramref name="simdBits"/>: at 512 (the default where the CPU has it) a d_state-16 channel's update is one
    /// register (15-25 % faster than two 256-bit halves at 16-64 rows), with the same results; tests run both.
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

    private readonly record struct ConvJob(nint Xz, int XzStride, nint Window, nint Weight, nint Bias, nint Output, int Rows, int Channels, int Width, bool BFloat16);

    private readonly record struct SsmJob(
        nint X, nint Delta, nint Projected, int ProjectedStride, nint Xz, nint State, nint A, nint D, nint DeltaBias, nint Output,
        int Rows, int Channels, int States, bool BFloat16, bool Wide);

    private static void Split(int rows, int channels, Action<int, int> body)
    {
        if ((long)rows * channels < ParallelThreshold)
        {
            body(0, channels);
            return;
        }

        KernelWorkers.Split(channels, 1, (from, to) => body((int)from, (int)to));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void ConvChannels(in ConvJob job, int from, int to)
    {
        if (job.Width == 4 && Sse.IsSupported)
        {
            int channels = to - from, weights = 16 * ((channels + 3) / 4);       // whole groups of four
            float[] staged = ArrayPool<float>.Shared.Rent(weights + channels);
            try
            {
                fixed (float* buffer = staged)
                {
                    StageConvConstants(job, from, to, weightsByTap: buffer, bias: buffer + weights);
                    ConvChannelsWidth4(job, from, to, buffer, buffer + weights);
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

    /// <summary>The weights of channels [from, to) as [group of 4 channels][tap][channel in group], and the bias, as float32.</summary>
    private static unsafe void StageConvConstants(in ConvJob job, int from, int to, float* weightsByTap, float* bias)
    {
        for (int c = from; c < to; c++)
        {
            int group = (c - from) / 4, lane = (c - from) % 4;
            for (int k = 0; k < 4; k++)
            {
                weightsByTap[(group * 16) + (k * 4) + lane] = KernelMath.Read(job.Weight, ((long)c * 4) + k, job.BFloat16);
            }

            bias[c - from] = KernelMath.Read(job.Bias, c, job.BFloat16);
        }
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
                SsmChannels(job, from, to, a, deltaBias, dSkip, bRows, cRows);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(perChannel);
        }
    }

    /// <summary>A = −exp(A_log) [channels, N], b_Δ and D for channels [from, to), read once per call (every row uses them).</summary>
    private static unsafe void StageConstants(in SsmJob job, int from, int to, float* a, float* deltaBias, float* dSkip)
    {
        int states = job.States, channels = to - from;
        for (int i = 0; i < channels * states; i++)
        {
            a[i] = KernelMath.Read(job.A, ((long)from * states) + i, job.BFloat16);
        }

        int done = 0;
        if (job.Wide)
        {
            for (; done + 16 <= channels * states; done += 16)
            {
                (-KernelMath.Exp(Vector512.Load(a + done))).Store(a + done);                                     // lane by lane as below
            }
        }

        ForLanes(a + done, (channels * states) - done, v => -KernelMath.Exp(v));
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
    /// Row by row, channels in tiles of <see cref="Tile"/>: per tile softplus(Δ) and SiLU(z) run over the whole tile
    /// at once, so the per-channel loop is the state update alone (lanes over d_state). A row's state
    /// h[b, from..to, :] is read front to back; the update is compute-bound (measured: the same time per channel
    /// with the state in L2), so the row order is for simplicity, not speed. Every transcendental runs lane-wise on
    /// staged values, so a channel's result does not depend on its tile, its lane or how the channels were split.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void SsmChannels(in SsmJob job, int from, int to, float* a, float* deltaBias, float* dSkip, float* bRows, float* cRows)
    {
        int lanes = Vector<float>.Count, states = job.States;
        float* delta = stackalloc float[Tile];                                   // Δ per channel of the tile
        float* x = stackalloc float[Tile];                                       // x̃
        float* gate = stackalloc float[Tile];                                    // SiLU(z)
        float* y = stackalloc float[Tile];                                       // C·h, then the output
        for (int b = 0; b < job.Rows; b++)
        {
            float* bRow = bRows + (b * states), cRow = cRows + (b * states);
            for (int c0 = from; c0 < to; c0 += Tile)
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
                if (job.Wide)
                {
                    // One channel per 512-bit register; the C·h lanes fold to 8 and sum as Vector<float> does (same results).
                    var c16 = Vector512.Load(cRow);
                    var b16 = Vector512.Load(bRow);
                    for (int i = 0; i < count; i++)
                    {
                        float* h = (float*)job.State + ((row + i) * 16);                                     // [N]
                        var decay = KernelMath.Exp(Vector512.Create(delta[i]) * Vector512.Load(a + ((t0 + i) * 16))); // exp(ΔA)
                        var held = Vector512.Load(h);
                        var cached = job.BFloat16 ? KernelMath.RoundToBFloat16(held) : held;
                        var next = (Vector512.Create(delta[i] * x[i]) * b16) + (decay * cached);              // Δ x̃ B + exp(ΔA) h
                        next.Store(h);
                        var product = next * c16;
                        y[i] = (Vector256.Sum(product.GetLower() + product.GetUpper()) + (x[i] * dSkip[t0 + i])) * gate[i];
                    }
                }
                else
                {
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
        var decay = KernelMath.Exp(delta * KernelMath.Load(a));                                                   // exp(ΔA)
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
