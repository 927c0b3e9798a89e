using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// The prefill's causal depthwise conv + SiLU (<see cref="Mamba.MambaMixer.Forward"/> step 2) as one CPU pass
/// in the token-major layout the projections use: x̃[t, c] = SiLU(b[c] + Σ_k w[c, k] · x[t − (K−1) + k, c]),
/// where positions before the chunk come from the conv state (the last K−1 inputs of the previous chunk).
/// The torch-op path (cat with the history, transpose, conv1d, SiLU, transpose back) stays the device-generic
/// path and the oracle. Lanes run over channels (16 where the CPU has AVX-512); channels are split over <see cref="KernelWorkers"/>.
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
        bool wide = Vector512.IsHardwareAccelerated;
        KernelWorkers.Split(channels, wide ? Vector512<float>.Count : Vector<float>.Count, (from, to) =>
        {
            if (wide)
            {
                Channels<Simd512>(job, (int)from, (int)to);
            }
            else
            {
                Channels<SimdVector>(job, (int)from, (int)to);
            }
        }, parallel: (long)rows * length * channels >= 1 << 14);

        return output;
    }

    private readonly record struct Job(nint Xz, nint State, nint Taps, nint Bias, nint Output, int Rows, int Length, int Channels, int Width, bool BFloat16);

    /// <summary>
    /// Channels [from, to) of every row and position, position by position: each output reads its K inputs straight
    /// from the rows of x (or, for the first K−1 positions, the conv state), so every read runs along a row and the
    /// prefetchers see it coming. (Walking one block of channels down the whole sequence instead read 16-32 bytes
    /// every 20 KB, a new cache line and page each time: 1.6-2.0 ms a layer at 256 x 5120, latency-bound.) The sum
    /// runs over the taps in order from zero, then the bias and SiLU, so every width and block gives the same bits.
    /// The K−1 inputs before the chunk (the state's last columns, channel-major) are first copied out as K−1 rows of
    /// the worker's channels, so the first positions take whole blocks too (one by one they had cost ~80 µs a position
    /// at 5120 channels: a fixed cost of every short chunk beside decode); a ragged last block goes through
    /// zero-padded copies.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void Channels<TV>(in Job job, int from, int to)
        where TV : unmanaged, ISimdMath<TV>
    {
        int span = to - from;
        float[] staged = ArrayPool<float>.Shared.Rent(Math.Max(1, (job.Width - 1) * span));
        try
        {
            fixed (float* history = staged)
            {
                Channels<TV>(job, from, to, history);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(staged);
        }
    }

    /// <summary><see cref="Channels{TV}(in Job, int, int)"/> with <paramref name="history"/> [K−1, to − from] to stage each row's inputs before the chunk in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void Channels<TV>(in Job job, int from, int to, float* history)
        where TV : unmanaged, ISimdMath<TV>
    {
        int lanes = TV.Lanes, width = job.Width, channels = job.Channels, length = job.Length, span = to - from;
        float* taps = (float*)job.Taps;                                          // [K,Di]
        float* bias = (float*)job.Bias;                                          // [Di]
        float* lane = stackalloc float[lanes];                                   // a gathered or zero-padded block
        float* padded = stackalloc float[lanes * (width + 1)];                   // a ragged block's K taps and bias
        long* rowAt = stackalloc long[width];                                    // element offset of each tap's input row
        int whole = from + ((to - from) / lanes * lanes);
        for (int b = 0; b < job.Rows; b++)
        {
            float* state = (float*)job.State + ((long)b * channels * width);     // [Di,K] of row b
            for (int c = from; c < whole; c++)                                   // input j < 0 (j >= 1 − K) is the state's column K + j
            {
                for (int k = 0; k < width - 1; k++)
                {
                    history[((long)k * span) + (c - from)] = state[((long)c * width) + k + 1];   // row k holds input j = k − (K − 1)
                }
            }

            for (int t = 0; t < length; t++)
            {
                long output = (((long)b * length) + t) * channels;
                for (int k = 0; k < width; k++)
                {
                    int j = t - (width - 1) + k;                                 // the input position tap k reads
                    rowAt[k] = j >= 0 ? (((long)b * length) + j) * 2 * channels : -1;
                }

                int c = from;
                for (; c < whole; c += lanes)                                    // whole blocks straight from x's rows (or the staged history)
                {
                    var sum = TV.Broadcast(0f);
                    for (int k = 0; k < width; k++)
                    {
                        var input = rowAt[k] >= 0
                            ? TV.LoadWide(job.Xz, rowAt[k] + c, job.BFloat16)
                            : TV.Load(history + ((long)(t + k) * span) + (c - from)); // input j = t − (K − 1) + k < 0: history row t + k
                        sum = TV.MultiplyAdd(input, TV.Load(taps + ((long)k * channels) + c), sum);
                    }

                    TV.StoreNarrow(TV.Silu(sum + TV.Load(bias + c)), job.Output, output + c, job.BFloat16);
                }

                for (; c < to; c += lanes)                                       // a ragged last block
                {
                    int count = Math.Min(lanes, to - c);
                    var sum = TV.Broadcast(0f);
                    for (int k = 0; k < width; k++)
                    {
                        for (int i = 0; i < lanes; i++)
                        {
                            lane[i] = i >= count ? 0f
                                : rowAt[k] >= 0 ? KernelMath.Read(job.Xz, rowAt[k] + c + i, job.BFloat16)
                                : state[((long)(c + i) * width) + k + t + 1];  // before the chunk: the state's column K + j
                        }

                        sum = TV.MultiplyAdd(TV.Load(lane), TV.Load(Padded(taps + ((long)k * channels) + c, count, lanes, padded + (k * lanes))), sum);
                    }

                    TV.Store(TV.Silu(sum + TV.Load(Padded(bias + c, count, lanes, padded + (width * lanes)))), lane);
                    for (int i = 0; i < count; i++)
                    {
                        KernelMath.Write(job.Output, output + c + i, lane[i], job.BFloat16);
                    }
                }
            }

            // The state keeps the last K inputs: x where the chunk reaches back that far, else the older state.
            for (int c = from; c < to; c++)
            {
                float* window = state + ((long)c * width);
                for (int k = 0; k < width; k++)
                {
                    int j = length - width + k;
                    window[k] = j >= 0 ? KernelMath.Read(job.Xz, ((((long)b * length) + j) * 2 * channels) + c, job.BFloat16) : window[k + length];
                }
            }
        }
    }

    /// <summary>Copies <paramref name="count"/> values and zeros up to <paramref name="lanes"/>; returns <paramref name="into"/>.</summary>
    private static unsafe float* Padded(float* from, int count, int lanes, float* into)
    {
        for (int i = 0; i < lanes; i++)
        {
            into[i] = i < count ? from[i] : 0f;
        }

        return into;
    }
}
