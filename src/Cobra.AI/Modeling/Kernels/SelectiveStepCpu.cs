using System.Numerics;
using System.Runtime.CompilerServices;
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
    /// </summary>
    public static unsafe Tensor SsmStep(Tensor xConv, Tensor deltaRaw, Tensor bc, Tensor xz, Tensor ssmState, Tensor aLog, Tensor dSkip, Tensor deltaBias)
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
            TensorMemory.Address(output), rows, channels, states, bf16);
        Split(rows, channels, (from, to) => SsmChannels(job, from, to));
        return output;
    }

    private readonly record struct ConvJob(nint Xz, int XzStride, nint Window, nint Weight, nint Bias, nint Output, int Rows, int Channels, int Width, bool BFloat16);

    private readonly record struct SsmJob(
        nint X, nint Delta, nint Projected, int ProjectedStride, nint Xz, nint State, nint A, nint D, nint DeltaBias, nint Output,
        int Rows, int Channels, int States, bool BFloat16);

    private static void Split(int rows, int channels, Action<int, int> body)
    {
        if ((long)rows * channels < ParallelThreshold)
        {
            body(0, channels);
            return;
        }

        KernelWorkers.Run((part, parts) => body((int)((long)channels * part / parts), (int)((long)channels * (part + 1) / parts)));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void ConvChannels(in ConvJob job, int from, int to)
    {
        float* sums = stackalloc float[Tile];                                    // a tile's pre-activations
        for (int c0 = from; c0 < to; c0 += Tile)
        {
            int count = Math.Min(Tile, to - c0);
            for (int b = 0; b < job.Rows; b++)
            {
                long row = (long)b * job.Channels;
                for (int i = 0; i < count; i++)
                {
                    int c = c0 + i;
                    float* window = (float*)job.Window + ((row + c) * job.Width);                  // [K]
                    long w = (long)c * job.Width;                                                  // weight row [K]
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

                    sums[i] = sum;
                }

                ForLanes(sums, count, v => KernelMath.Silu(v));
                for (int i = 0; i < count; i++)
                {
                    KernelMath.Write(job.Output, row + c0 + i, sums[i], job.BFloat16);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void SsmChannels(in SsmJob job, int from, int to)
    {
        int states = job.States;
        int staged = job.Rows * states;
        Span<float> rowsBuffer = staged <= 4096 ? stackalloc float[2 * staged] : new float[2 * staged];
        fixed (float* buffer = rowsBuffer)
        {
            SsmChannels(job, from, to, bRows: buffer, cRows: buffer + staged);
        }
    }

    /// <summary>
    /// Channels in tiles of <see cref="Tile"/>: a tile's A = −exp(A_log), b_Δ and D are read once per call; per row,
    /// softplus(Δ) and SiLU(z) run over the whole tile at once, so the per-channel loop is the state update alone
    /// (lanes over d_state). Every transcendental runs lane-wise on staged values, so a channel's result does
    /// not depend on its tile, its lane or how the channels were split.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void SsmChannels(in SsmJob job, int from, int to, float* bRows, float* cRows)
    {
        int lanes = Vector<float>.Count, states = job.States;
        float* a = stackalloc float[Tile * states];                              // A[tile, N]
        float* deltaBias = stackalloc float[Tile];
        float* dSkip = stackalloc float[Tile];
        float* delta = stackalloc float[Tile];                                   // Δ per channel of the tile
        float* x = stackalloc float[Tile];                                       // x̃
        float* gate = stackalloc float[Tile];                                    // SiLU(z)
        float* y = stackalloc float[Tile];                                       // C·h, then the output
        for (int b = 0; b < job.Rows; b++)
        {
            long projectedRow = ((long)b * job.ProjectedStride) + job.ProjectedStride - (2 * states);
            for (int n = 0; n < states; n++)
            {
                bRows[(b * states) + n] = KernelMath.Read(job.Projected, projectedRow + n, job.BFloat16);
                cRows[(b * states) + n] = KernelMath.Read(job.Projected, projectedRow + states + n, job.BFloat16);
            }
        }

        for (int c0 = from; c0 < to; c0 += Tile)
        {
            int count = Math.Min(Tile, to - c0);
            for (int i = 0; i < count * states; i++)
            {
                a[i] = KernelMath.Read(job.A, ((long)c0 * states) + i, job.BFloat16);
            }

            ForLanes(a, count * states, v => -KernelMath.Exp(v));
            for (int i = 0; i < count; i++)
            {
                deltaBias[i] = KernelMath.Read(job.DeltaBias, c0 + i, job.BFloat16);
                dSkip[i] = KernelMath.Read(job.D, c0 + i, job.BFloat16);
            }

            for (int b = 0; b < job.Rows; b++)
            {
                long row = ((long)b * job.Channels) + c0;                         // element (b, c0) of a [B, Di] tensor
                long zRow = row + ((long)(b + 1) * job.Channels);                 // xz[b, Di + c0]
                for (int i = 0; i < count; i++)
                {
                    delta[i] = KernelMath.Read(job.Delta, row + i, job.BFloat16) + deltaBias[i];
                    x[i] = KernelMath.Read(job.X, row + i, job.BFloat16);
                    gate[i] = KernelMath.Read(job.Xz, zRow + i, job.BFloat16);
                }

                ForLanes(delta, count, v => KernelMath.Softplus(v));
                ForLanes(gate, count, v => KernelMath.Silu(v));
                float* bRow = bRows + (b * states), cRow = cRows + (b * states);
                for (int i = 0; i < count; i++)
                {
                    float* h = (float*)job.State + ((row + i) * states);                              // [N]
                    float* ai = a + (i * states);
                    var deltaVector = new Vector<float>(delta[i]);
                    var deltaX = new Vector<float>(delta[i] * x[i]);
                    var sum = Vector<float>.Zero;
                    for (int n = 0; n < states; n += lanes)
                    {
                        var decay = KernelMath.Exp(deltaVector * KernelMath.Load(ai + n));                                  // exp(ΔA)
                        var cached = job.BFloat16 ? KernelMath.RoundToBFloat16(KernelMath.Load(h + n)) : KernelMath.Load(h + n); // as the cache's dtype holds it
                        var next = (deltaX * KernelMath.Load(bRow + n)) + (decay * cached);                                 // Δ x̃ B + exp(ΔA) h
                        KernelMath.Store(next, h + n);
                        sum += next * KernelMath.Load(cRow + n);                                                          // C · h, per lane
                    }

                    y[i] = (Vector.Sum(sum) + (x[i] * dSkip[i])) * gate[i];
                }

                for (int i = 0; i < count; i++)
                {
                    KernelMath.Write(job.Output, row + i, y[i], job.BFloat16);
                }
            }
        }
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
