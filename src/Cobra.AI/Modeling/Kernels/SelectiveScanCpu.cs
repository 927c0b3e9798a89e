using System.Numerics;
using System.Runtime.CompilerServices;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// The selective scan as one fused CPU kernel, the way mamba_ssm's CUDA kernel runs it: each thread owns a
/// block of channels (one SIMD lane per channel) and walks the sequence once, keeping the d_state partial
/// states in registers. Nothing of size L·D·N is ever materialised, so it runs at arithmetic speed instead
/// of memory speed. Same arithmetic as <see cref="SelectiveScan.Sequential"/>, in float32.
/// </summary>
internal static class SelectiveScanCpu
{
    /// <summary>Runs the scan; inputs may be any float dtype, on the CPU.</summary>
    public static (Tensor Output, Tensor LastState) Run(in ScanInputs inputs, Tensor? initialState)
    {
        var (u, delta, a, bm, cm) = SelectiveScan.Prepare(inputs);
        var z = inputs.Z.to(ScalarType.Float32).contiguous();                    // [B,L,D]
        var dSkip = inputs.DSkip.to(ScalarType.Float32).contiguous();            // [D]
        u = u.contiguous();                                                       // [B,L,D]
        delta = delta.contiguous();                                               // [B,L,D]
        bm = bm.contiguous();                                                     // [B,L,N]
        cm = cm.contiguous();                                                     // [B,L,N]
        var aByState = a.t().contiguous();                                        // [N,D]: lanes over channels
        var stateByState = initialState is null                                   // [B,N,D]
            ? torch.zeros([u.shape[0], a.shape[1], u.shape[2]], ScalarType.Float32, torch.CPU)
            : initialState.to(ScalarType.Float32).transpose(1, 2).contiguous();
        var output = torch.empty_like(u);                                         // [B,L,D]

        var shape = new ScanShape((int)u.shape[0], (int)u.shape[1], (int)u.shape[2], (int)a.shape[1]);
        var buffers = new ScanBuffers(
            TensorMemory.Address(u), TensorMemory.Address(delta), TensorMemory.Address(aByState), TensorMemory.Address(bm), TensorMemory.Address(cm),
            TensorMemory.Address(dSkip), TensorMemory.Address(z), TensorMemory.Address(stateByState), TensorMemory.Address(output));

        int blocksPerBatch = (shape.Channels + Vector<float>.Count - 1) / Vector<float>.Count;
        int workItems = shape.Batch * blocksPerBatch;

        // Each part takes a contiguous run of channel blocks, so neighbouring blocks share cache lines.
        KernelWorkers.Run((part, parts) =>
        {
            int end = (int)((long)workItems * (part + 1) / parts);
            for (int item = (int)((long)workItems * part / parts); item < end; item++)
            {
                ScanBlock(shape, buffers, item / blocksPerBatch, (item % blocksPerBatch) * Vector<float>.Count);
            }
        });

        return (output, stateByState.transpose(1, 2));                           // [B,L,D], [B,D,N]
    }

    private readonly record struct ScanShape(int Batch, int Length, int Channels, int States);

    private readonly record struct ScanBuffers(nint U, nint Delta, nint AByState, nint B, nint C, nint DSkip, nint Z, nint State, nint Output);

    /// <summary>Scans channels [d0, d0 + lanes) of batch item b over the whole sequence.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void ScanBlock(ScanShape s, ScanBuffers p, int b, int d0)
    {
        int lanes = Vector<float>.Count;
        if (d0 + lanes > s.Channels)
        {
            ScanTail(s, p, b, d0);
            return;
        }

        float* u = (float*)p.U + ((long)b * s.Length * s.Channels) + d0;
        float* delta = (float*)p.Delta + ((long)b * s.Length * s.Channels) + d0;
        float* z = (float*)p.Z + ((long)b * s.Length * s.Channels) + d0;
        float* y = (float*)p.Output + ((long)b * s.Length * s.Channels) + d0;
        float* bm = (float*)p.B + ((long)b * s.Length * s.States);
        float* cm = (float*)p.C + ((long)b * s.Length * s.States);
        float* state = (float*)p.State + ((long)b * s.States * s.Channels) + d0;

        Vector<float>* h = stackalloc Vector<float>[s.States];                   // h[n], lanes = channels
        Vector<float>* a = stackalloc Vector<float>[s.States];                   // A[:, n]
        for (int n = 0; n < s.States; n++)
        {
            h[n] = Load(state + ((long)n * s.Channels));
            a[n] = Load((float*)p.AByState + ((long)n * s.Channels) + d0);
        }

        var dSkip = Load((float*)p.DSkip + d0);
        for (int t = 0; t < s.Length; t++)
        {
            long row = (long)t * s.Channels;
            var dt = Load(delta + row);                                          // Δ_t
            var x = Load(u + row);                                               // x̃_t
            var dtx = dt * x;
            var acc = Vector<float>.Zero;
            float* bt = bm + ((long)t * s.States);
            float* ct = cm + ((long)t * s.States);
            for (int n = 0; n < s.States; n++)
            {
                h[n] = Vector.FusedMultiplyAdd(Exp(dt * a[n]), h[n], dtx * bt[n]);            // h = exp(ΔA) h + Δ B x̃
                acc = Vector.FusedMultiplyAdd(h[n], new Vector<float>(ct[n]), acc);                                             // y = C · h
            }

            var gate = Load(z + row);
            var silu = gate / (Vector<float>.One + Exp(-gate));
            Store((acc + (dSkip * x)) * silu, y + row);
        }

        for (int n = 0; n < s.States; n++)
        {
            Store(h[n], state + ((long)n * s.Channels));
        }
    }

    /// <summary>The channels left over when d_inner is not a multiple of the SIMD width, one at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void ScanTail(ScanShape s, ScanBuffers p, int b, int d0)
    {
        Span<float> h = stackalloc float[s.States];
        for (int d = d0; d < s.Channels; d++)
        {
            long column = ((long)b * s.Length * s.Channels) + d;
            float* state = (float*)p.State + ((long)b * s.States * s.Channels) + d;
            for (int n = 0; n < s.States; n++)
            {
                h[n] = state[(long)n * s.Channels];
            }

            for (int t = 0; t < s.Length; t++)
            {
                long at = column + ((long)t * s.Channels);
                float dt = ((float*)p.Delta)[at], x = ((float*)p.U)[at], gate = ((float*)p.Z)[at];
                float* bt = (float*)p.B + (((long)b * s.Length) + t) * s.States;
                float* ct = (float*)p.C + (((long)b * s.Length) + t) * s.States;
                float acc = 0;
                for (int n = 0; n < s.States; n++)
                {
                    float a = ((float*)p.AByState)[((long)n * s.Channels) + d];
                    h[n] = (MathF.Exp(dt * a) * h[n]) + (dt * x * bt[n]);
                    acc += h[n] * ct[n];
                }

                float silu = gate / (1f + MathF.Exp(-gate));
                ((float*)p.Output)[at] = (acc + (((float*)p.DSkip)[d] * x)) * silu;
            }

            for (int n = 0; n < s.States; n++)
            {
                state[(long)n * s.Channels] = h[n];
            }
        }
    }

    /// <summary>
    /// e^x to within 1.2e-7 relative (Cephes' expf: x = n ln2 + r, degree-6 polynomial in r, 2^n via the
    /// exponent bits). About 4x faster than <see cref="Vector.Exp(Vector{float})"/>, which dominates the scan.
    /// Inputs below −87.3 give ~1e-38 instead of 0 (a decay factor that small is zero for every purpose).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<float> Exp(Vector<float> x)
    {
        x = Vector.Min(Vector.Max(x, new Vector<float>(-87.33654f)), new Vector<float>(88.72283f));
        var n = Vector.Round(x * new Vector<float>(1.44269504088896341f));     // round(x / ln 2)
        var r = Vector.FusedMultiplyAdd(n, new Vector<float>(-0.693359375f), x); // ln 2 split in two for accuracy
        r = Vector.FusedMultiplyAdd(n, new Vector<float>(2.12194440e-4f), r);
        var p = new Vector<float>(1.9875691500e-4f);
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(1.3981999507e-3f));
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(8.3334519073e-3f));
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(4.1665795894e-2f));
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(1.6666665459e-1f));
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(5.0000001201e-1f));
        p = Vector.FusedMultiplyAdd(p * r, r, r + Vector<float>.One);
        var twoToN = Vector.AsVectorSingle((Vector.ConvertToInt32(n) + new Vector<int>(127)) << 23);
        return p * twoToN;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector<float> Load(float* at) => Unsafe.ReadUnaligned<Vector<float>>(at);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Store(Vector<float> value, float* at) => Unsafe.WriteUnaligned(at, value);
}
