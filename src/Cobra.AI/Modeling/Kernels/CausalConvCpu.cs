using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// The prefill's causal depthwise conv + SiLU (<see cref="Mamba.MambaMixer.Forward"/> step 2) as one CPU pass
/// in the token-major layout the projections use: x̃[t, c] = SiLU(b[c] + Σ_k w[c, k] · x[t − (K−1) + k, c]),
/// where positions before the chunk come from the conv state (the last K−1 inputs of the previous chunk).
/// The torch-op path (cat with the history, transpose, conv1d, SiLU, transpose back) stays the device-generic
/// path and the oracle. Lanes run over channels; channels are split over <see cref="KernelWorkers"/>.
/// </summary>
internal static class CausalConvCpu
{
    /// <summary>True when <see cref="Forward"/> handles these tensors.</summary>
    public static bool Supports(Tensor xz, Tensor convState) =>
        xz.device_type == DeviceType.CPU && convState.device_type == DeviceType.CPU && xz.dim() == 3
        && (xz.dtype == ScalarType.Float32 || xz.dtype == ScalarType.BFloat16)
        && convState.dtype == ScalarType.Float32 && convState.is_contiguous()
        && convState.shape[0] == xz.shape[0] && 2 * convState.shape[1] == xz.shape[2];

    /// <summary>
    /// x = the first half of <paramref name="xz"/> [B, L, 2Di] (model dtype); returns x̃ [B, L, Di] in the model
    /// dtype and leaves the last K inputs in <paramref name="convState"/> [B, Di, K] (float32).
    /// <paramref name="weight"/> [Di, 1, K], <paramref name="bias"/> [Di].
    /// </summary>
    public static unsafe Tensor Forward(Tensor xz, Tensor convState, Tensor weight, Tensor bias)
    {
        int rows = (int)xz.shape[0], length = (int)xz.shape[1], channels = (int)convState.shape[1], width = (int)convState.shape[2];
        bool bf16 = xz.dtype == ScalarType.BFloat16;
        using var source = xz.contiguous();                                      // [B,L,2Di]
        using var taps = weight.to(ScalarType.Float32).reshape(channels, width).t().contiguous(); // [K,Di] float32
        using var offset = bias.to(ScalarType.Float32).contiguous();             // [Di]
        var output = torch.empty([rows, length, channels], xz.dtype, torch.CPU); // [B,L,Di]
        var job = new Job(TensorMemory.Address(source), TensorMemory.Address(convState), TensorMemory.Address(taps), TensorMemory.Address(offset),
            TensorMemory.Address(output), rows, length, channels, width, bf16);
        KernelWorkers.Split(channels, Vector<float>.Count, (from, to) => Channels(job, (int)from, (int)to), parallel: (long)rows * length * channels >= 1 << 14);

        return output;
    }

    private readonly record struct Job(nint Xz, nint State, nint Taps, nint Bias, nint Output, int Rows, int Length, int Channels, int Width, bool BFloat16);

    /// <summary>
    /// Channels [from, to) of every row and position; the window slides over registers-worth of channels. Whole
    /// blocks of lanes read and write their rows as vectors; a ragged last block goes element by element.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void Channels(in Job job, int from, int to)
    {
        int lanes = Vector<float>.Count, width = job.Width, channels = job.Channels;
        float* taps = (float*)job.Taps;                                          // [K,Di]
        float* window = stackalloc float[width * lanes];                         // the last K inputs, [K, lanes]
        Vector<float>* tap = stackalloc Vector<float>[width];                    // w[c0.., k], one vector per tap
        float* newest = window + ((width - 1) * lanes);
        for (int b = 0; b < job.Rows; b++)
        {
            for (int c0 = from; c0 < to; c0 += lanes)
            {
                int count = Math.Min(lanes, to - c0);
                bool whole = count == lanes;
                float* state = (float*)job.State + ((((long)b * channels) + c0) * width); // [count, K]

                // 1. The window starts as the state: the last K inputs before this chunk, oldest first.
                for (int k = 0; k < width; k++)
                {
                    for (int i = 0; i < lanes; i++)
                    {
                        window[(k * lanes) + i] = i < count ? state[((long)i * width) + k] : 0f;
                    }

                    tap[k] = KernelMath.LoadPartial(taps + ((long)k * channels) + c0, count);
                }

                var bias = KernelMath.LoadPartial((float*)job.Bias + c0, count);
                for (int t = 0; t < job.Length; t++)
                {
                    // 2. Slide out the oldest input, append x[t]; x̃[t] = SiLU(b + Σ_k w_k · window_k).
                    for (int k = 0; k < width - 1; k++)
                    {
                        KernelMath.Store(KernelMath.Load(window + ((k + 1) * lanes)), window + (k * lanes));
                    }

                    long row = ((long)b * job.Length) + t;
                    if (whole)
                    {
                        KernelMath.Store(KernelMath.LoadWide(job.Xz, (row * 2 * channels) + c0, job.BFloat16), newest);
                    }
                    else
                    {
                        for (int i = 0; i < count; i++)
                        {
                            newest[i] = KernelMath.Read(job.Xz, (row * 2 * channels) + c0 + i, job.BFloat16);
                        }
                    }

                    var sum = Vector<float>.Zero;
                    for (int k = 0; k < width; k++)
                    {
                        sum = Vector.FusedMultiplyAdd(KernelMath.Load(window + (k * lanes)), tap[k], sum);
                    }

                    var activated = KernelMath.Silu(sum + bias);
                    if (whole)
                    {
                        KernelMath.StoreNarrow(activated, job.Output, (row * channels) + c0, job.BFloat16);
                    }
                    else
                    {
                        for (int i = 0; i < count; i++)
                        {
                            KernelMath.Write(job.Output, (row * channels) + c0 + i, activated[i], job.BFloat16);
                        }
                    }
                }

                // 3. The state keeps the last K inputs.
                for (int i = 0; i < count; i++)
                {
                    for (int k = 0; k < width; k++)
                    {
                        state[((long)i * width) + k] = window[(k * lanes) + i];
                    }
                }
            }
        }
    }
}
