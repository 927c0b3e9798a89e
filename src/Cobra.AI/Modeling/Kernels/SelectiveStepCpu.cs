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
/// Lanes run over d_state (16 = one or two registers); channels are split over <see cref="KernelWorkers"/>.
/// </summary>
internal static class SelectiveStepCpu
{
    /// <summary>Below this many (row, channel) pairs one thread is faster than waking another.</summary>
    private const int ParallelThreshold = 2048;

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
        for (int b = 0; b < job.Rows; b++)
        {
            for (int c = from; c < to; c++)
            {
                float* window = (float*)job.Window + ((((long)b * job.Channels) + c) * job.Width); // [K]
                long w = (long)c * job.Width;                                                          // weight row [K]
                for (int i = 0; i < job.Width - 1; i++)
                {
                    window[i] = window[i + 1];
                }

                window[job.Width - 1] = KernelMath.Read(job.Xz, ((long)b * job.XzStride) + c, job.BFloat16);
                float sum = 0;
                for (int i = 0; i < job.Width; i++)
                {
                    sum += window[i] * KernelMath.Read(job.Weight, w + i, job.BFloat16);
                }

                sum += KernelMath.Read(job.Bias, c, job.BFloat16);
                KernelMath.Write(job.Output, ((long)b * job.Channels) + c, KernelMath.Silu(sum), job.BFloat16);
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void SsmChannels(in SsmJob job, int from, int to, float* bRows, float* cRows)
    {
        int lanes = Vector<float>.Count, states = job.States;
        float* a = stackalloc float[states];                                     // A[c, :]
        for (int b = 0; b < job.Rows; b++)
        {
            long projectedRow = ((long)b * job.ProjectedStride) + job.ProjectedStride - (2 * states);
            for (int n = 0; n < states; n++)
            {
                bRows[(b * states) + n] = KernelMath.Read(job.Projected, projectedRow + n, job.BFloat16);
                cRows[(b * states) + n] = KernelMath.Read(job.Projected, projectedRow + states + n, job.BFloat16);
            }
        }

        // Channels outer, rows inner: a channel's parameters are read (and A = −exp(A_log) computed) once per call.
        for (int c = from; c < to; c++)
        {
            for (int n = 0; n < states; n++)
            {
                a[n] = -MathF.Exp(KernelMath.Read(job.A, ((long)c * states) + n, job.BFloat16));
            }

            float deltaBias = KernelMath.Read(job.DeltaBias, c, job.BFloat16), dSkip = KernelMath.Read(job.D, c, job.BFloat16);
            for (int b = 0; b < job.Rows; b++)
            {
                long at = ((long)b * job.Channels) + c;
                float delta = KernelMath.Softplus(KernelMath.Read(job.Delta, at, job.BFloat16) + deltaBias);
                float x = KernelMath.Read(job.X, at, job.BFloat16);
                float z = KernelMath.Read(job.Xz, at + ((long)(b + 1) * job.Channels), job.BFloat16); // xz[b, Di + c]
                float* h = (float*)job.State + (at * states);                            // [N]
                var deltaVector = new Vector<float>(delta);
                var deltaX = new Vector<float>(delta * x);
                var y = Vector<float>.Zero;
                for (int n = 0; n < states; n += lanes)
                {
                    var decay = KernelMath.Exp(deltaVector * KernelMath.Load(a + n));                      // exp(ΔA)
                    var cached = job.BFloat16 ? KernelMath.RoundToBFloat16(KernelMath.Load(h + n)) : KernelMath.Load(h + n);        // as the cache's dtype holds it
                    var next = (deltaX * KernelMath.Load(bRows + (b * states) + n)) + (decay * cached);        // Δ x̃ B + exp(ΔA) h
                    KernelMath.Store(next, h + n);
                    y += next * KernelMath.Load(cRows + (b * states) + n);                                   // C · h, per lane
                }

                KernelMath.Write(job.Output, at, (Vector.Sum(y) + (x * dSkip)) * KernelMath.Silu(z), job.BFloat16);
            }
        }
    }
}
