using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// The selective scan as one fused CPU kernel, the way mamba_ssm's CUDA kernel runs it: each thread owns a
/// block of channels (one SIMD lane per channel) and walks the sequence once, keeping the d_state partial
/// states in registers. Nothing of size L·D·N is ever materialised, so it runs at arithmetic speed instead
/// of memory speed. Like the CUDA kernel it reads x̃, Δ and z in the model dtype, applies Δ's bias and
/// softplus itself, and writes the gated output in the model dtype (rounded once); the arithmetic is float32,
/// as in <see cref="SelectiveScan.Sequential"/>. Like the CUDA kernel it takes the decay as 2^(Δ · A log₂e), with
/// A log₂e once per channel (<see cref="KernelMath.Pow2(Vector512{float})"/>: 7 multiply-adds a state update where
/// e^(ΔA) took 12, and the scan is bound by them). Where the native kernels load (AVX512-BF16 CPUs), 512-bit blocks
/// with d_state 16 run the same operations in C (<see cref="NativeBf16Kernels.Scan16"/>, bit for bit the same
/// results): the JIT keeps the 16 states and the partial sums on the stack and re-broadcasts every constant, GCC keeps
/// them in registers (the scan of 256 positions over all 64 layers, 2 Zen 4 cores: 315-459 ms against 509-921).
/// </summary>
internal static class SelectiveScanCpu
{

    /// <summary>
    /// Runs the scan on CPU tensors of one float dtype (float32 or bf16); returns the gated output [B, L, D] in
    /// U's dtype and the float32 final state [B, D, N].
    /// </summary>
    public static (Tensor Output, Tensor LastState) Run(in ScanInputs inputs, Tensor? initialState) => Run(inputs, initialState, SimdWidth.Bits);

    /// <summary><see cref="Run(in ScanInputs, Tensor?)"/> at a given register width.</summary>
    /// <param name="inputs">The scan's inputs.</param>
    /// <param name="initialState">The float32 state [B, D, N] to start from (zeros when null).</param>
    /// <param name="simdBits">At 512 (the default where the CPU has it) 16 channels share a register; 256: 8. Same results.</param>
    public static (Tensor Output, Tensor LastState) Run(in ScanInputs inputs, Tensor? initialState, int simdBits) =>
        Run(inputs, initialState, simdBits, NativeBf16Kernels.IsAvailable);

    /// <summary>
    /// <see cref="Run(in ScanInputs, Tensor?, int)"/>, with <paramref name="native"/> choosing whether 512-bit blocks of
    /// d_state 16 go to the native kernel (<see cref="NativeBf16Kernels.Scan16"/>, where it is available): the same
    /// results either way.
    /// </summary>
    internal static (Tensor Output, Tensor LastState) Run(in ScanInputs inputs, Tensor? initialState, int simdBits, bool native)
    {
        var dtype = inputs.U.dtype;
        var wide = dtype is ScalarType.BFloat16 or ScalarType.Float32 ? dtype : ScalarType.Float32; // other dtypes: widened first
        bool bf16 = wide == ScalarType.BFloat16;
        var u = inputs.U.to(wide).contiguous();                                  // [B,L,D]
        var delta = inputs.Delta.to(wide).contiguous();                          // [B,L,D] before bias and softplus
        var z = GateRows(inputs.Z.to(wide));                                     // [B,L,D], rows ZStride apart
        var bm = inputs.B.to(ScalarType.Float32).contiguous();                   // [B,L,N]
        var cm = inputs.C.to(ScalarType.Float32).contiguous();                   // [B,L,N]
        var dSkip = inputs.DSkip.to(ScalarType.Float32).contiguous();            // [D]
        var deltaBias = inputs.DeltaBias.to(ScalarType.Float32).contiguous();    // [D]
        var a = inputs.A.to(ScalarType.Float32).contiguous();                    // [D,N]
        var state = initialState is null                                          // [B,D,N], updated in place by the kernel
            ? torch.zeros([u.shape[0], u.shape[2], a.shape[1]], ScalarType.Float32, torch.CPU)
            : initialState.to(ScalarType.Float32, copy: true).contiguous();
        var output = torch.empty_like(u);                                         // [B,L,D]

        bool wide512 = simdBits >= 512 && Vector512.IsHardwareAccelerated && Vector<float>.Count == 8;
        var shape = new ScanShape((int)u.shape[0], (int)u.shape[1], (int)u.shape[2], (int)a.shape[1], bf16, z.stride(1));
        var buffers = new ScanBuffers(
            TensorMemory.Address(u), TensorMemory.Address(delta), TensorMemory.Address(deltaBias), TensorMemory.Address(a), TensorMemory.Address(bm),
            TensorMemory.Address(cm), TensorMemory.Address(dSkip), TensorMemory.FirstElement(z), TensorMemory.Address(state), TensorMemory.Address(output));

        // Work items are pairs of channel blocks (two independent recurrences interleaved keep more of the
        // core's pipelines busy than one); each part takes a contiguous run of them.
        bool native16 = native && wide512 && shape.States == 16 && NativeBf16Kernels.IsAvailable;
        int pair = 2 * (wide512 ? Vector512<float>.Count : Vector<float>.Count);
        int pairsPerBatch = (shape.Channels + pair - 1) / pair;
        int workItems = shape.Batch * pairsPerBatch;
        KernelWorkers.Split(workItems, 1, (from, to) =>
        {
            for (int item = (int)from; item < to; item++)
            {
                int b = item / pairsPerBatch, d0 = (item % pairsPerBatch) * pair;
                if (d0 + pair > shape.Channels)
                {
                    for (int block = d0; block < shape.Channels; block += Vector<float>.Count)
                    {
                        ScanBlock(shape, buffers, b, block);                     // the ragged end, 8 lanes (or fewer) at a time
                    }
                }
                else if (native16)
                {
                    Native16(shape, buffers, b, d0, d0 + pair);
                }
                else if (wide512)
                {
                    ScanPair<Simd512>(shape, buffers, b, d0);
                }
                else
                {
                    ScanPair<SimdVector>(shape, buffers, b, d0);
                }
            }
        });

        return (output, state);                                                  // [B,L,D], [B,D,N]
    }

    /// <summary>
    /// A = −exp(<paramref name="aLog"/>) [D, N] as float32, lane-wise with <see cref="KernelMath.Exp(Vector{float})"/>:
    /// the values the decode step stages (<see cref="SelectiveStepCpu"/>), in ~30 µs a layer (5120 x 16, bf16) where
    /// libtorch's conversion and exp took ~210 µs (a fixed cost of every prefill chunk, however short).
    /// </summary>
    internal static unsafe Tensor NegativeExp(Tensor aLog)
    {
        var source = aLog.dtype is ScalarType.Float32 or ScalarType.BFloat16 ? aLog.contiguous() : aLog.to(ScalarType.Float32).contiguous(); // [D,N]
        var a = torch.empty(aLog.shape, ScalarType.Float32, torch.CPU);          // [D,N]
        KernelMath.NegateExp(TensorMemory.Address(source), 0, source.dtype == ScalarType.BFloat16, (float*)TensorMemory.Address(a),
            checked((int)a.NumberOfElements), SimdWidth.Bits >= 512 && Vector512.IsHardwareAccelerated);
        return a;
    }

    /// <summary>The scan's sizes; z's rows are <paramref name="ZStride"/> elements apart (the gate is read in place from in_proj's output).</summary>
    private readonly record struct ScanShape(int Batch, int Length, int Channels, int States, bool BFloat16, long ZStride);

    /// <summary>
    /// The gate as the kernel reads it: z as given when its channels are contiguous and its rows evenly spaced (the
    /// z half of in_proj's [B, L, 2D] output, read in place instead of copied: 2.6 MB a layer at 256 tokens), else a
    /// contiguous copy.
    /// </summary>
    private static Tensor GateRows(Tensor z) =>
        z.stride(2) == 1 && z.stride(0) == z.shape[1] * z.stride(1) ? z : z.contiguous();

    /// <summary>The kernel's operands; A [D, N] and the state [B, D, N] keep their channel-major layouts (a block's lanes gather them once).</summary>
    private readonly record struct ScanBuffers(nint U, nint Delta, nint DeltaBias, nint A, nint B, nint C, nint DSkip, nint Z, nint State, nint Output);

    /// <summary>
    /// Scans channels [d0, d0 + 2·lanes) of batch item b, lanes = <typeparamref name="TV"/>'s: <see cref="ScanBlock"/>'s
    /// arithmetic for two blocks at once, lane for lane the same operations (results do not depend on which of the
    /// two ran a channel, nor on the register width: <see cref="SimdVector"/> and <see cref="Simd512"/> compute alike).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0 code
    private static unsafe void ScanPair<TV>(ScanShape s, ScanBuffers p, int b, int d0)
        where TV : unmanaged, ISimdMath<TV>
    {
        int lanes = TV.Lanes;
        long start = ((long)b * s.Length * s.Channels) + d0;                   // element offset of (b, 0, d0)
        long gateStart = ((long)b * s.Length * s.ZStride) + d0;                 // ... in z
        float* bm = (float*)p.B + ((long)b * s.Length * s.States);
        float* cm = (float*)p.C + ((long)b * s.Length * s.States);
        float* state = (float*)p.State + ((((long)b * s.Channels) + d0) * s.States); // (b, d0, 0) of [B,D,N]
        float* aBlock = (float*)p.A + ((long)d0 * s.States);                     // (d0, 0) of [D,N]
        int second = lanes * s.States;                                           // the second block's offset

        TV* h = stackalloc TV[2 * s.States];                                     // h[2n], h[2n+1]: the two blocks
        TV* a = stackalloc TV[2 * s.States];                                     // A[:, n] log₂e likewise: e^(ΔA) = 2^(Δ·A log₂e)
        float* column = stackalloc float[lanes];                                 // one state of a block's channels
        var log2E = TV.Broadcast(KernelMath.Log2E);
        for (int n = 0; n < s.States; n++)
        {
            h[2 * n] = TV.Load(Gather(state + n, s.States, lanes, column));
            h[(2 * n) + 1] = TV.Load(Gather(state + second + n, s.States, lanes, column));
            a[2 * n] = TV.Load(Gather(aBlock + n, s.States, lanes, column)) * log2E;
            a[(2 * n) + 1] = TV.Load(Gather(aBlock + second + n, s.States, lanes, column)) * log2E;
        }

        var dSkip0 = TV.Load((float*)p.DSkip + d0);
        var dSkip1 = TV.Load((float*)p.DSkip + d0 + lanes);
        var deltaBias0 = TV.Load((float*)p.DeltaBias + d0);
        var deltaBias1 = TV.Load((float*)p.DeltaBias + d0 + lanes);
        for (int t = 0; t < s.Length; t++)
        {
            long row = start + ((long)t * s.Channels);
            var dt0 = TV.Softplus(TV.LoadWide(p.Delta, row, s.BFloat16) + deltaBias0);          // Δ_t
            var dt1 = TV.Softplus(TV.LoadWide(p.Delta, row + lanes, s.BFloat16) + deltaBias1);
            var x0 = TV.LoadWide(p.U, row, s.BFloat16);                                          // x̃_t
            var x1 = TV.LoadWide(p.U, row + lanes, s.BFloat16);
            var dtx0 = dt0 * x0;
            var dtx1 = dt1 * x1;
            float* bt = bm + ((long)t * s.States);
            float* ct = cm + ((long)t * s.States);

            // y = C · h over four partial sums per block, as in ScanBlock.
            TV acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            TV bcc0 = default, bcc1 = default, bcc2 = default, bcc3 = default;
            int n = 0;
            for (; n + 4 <= s.States; n += 4)
            {
                h[2 * n] = TV.MultiplyAdd(TV.Pow2(dt0 * a[2 * n]), h[2 * n], dtx0 * TV.Broadcast(bt[n]));
                h[(2 * n) + 1] = TV.MultiplyAdd(TV.Pow2(dt1 * a[(2 * n) + 1]), h[(2 * n) + 1], dtx1 * TV.Broadcast(bt[n]));
                h[2 * (n + 1)] = TV.MultiplyAdd(TV.Pow2(dt0 * a[2 * (n + 1)]), h[2 * (n + 1)], dtx0 * TV.Broadcast(bt[n + 1]));
                h[(2 * (n + 1)) + 1] = TV.MultiplyAdd(TV.Pow2(dt1 * a[(2 * (n + 1)) + 1]), h[(2 * (n + 1)) + 1], dtx1 * TV.Broadcast(bt[n + 1]));
                h[2 * (n + 2)] = TV.MultiplyAdd(TV.Pow2(dt0 * a[2 * (n + 2)]), h[2 * (n + 2)], dtx0 * TV.Broadcast(bt[n + 2]));
                h[(2 * (n + 2)) + 1] = TV.MultiplyAdd(TV.Pow2(dt1 * a[(2 * (n + 2)) + 1]), h[(2 * (n + 2)) + 1], dtx1 * TV.Broadcast(bt[n + 2]));
                h[2 * (n + 3)] = TV.MultiplyAdd(TV.Pow2(dt0 * a[2 * (n + 3)]), h[2 * (n + 3)], dtx0 * TV.Broadcast(bt[n + 3]));
                h[(2 * (n + 3)) + 1] = TV.MultiplyAdd(TV.Pow2(dt1 * a[(2 * (n + 3)) + 1]), h[(2 * (n + 3)) + 1], dtx1 * TV.Broadcast(bt[n + 3]));
                acc0 = TV.MultiplyAdd(h[2 * n], TV.Broadcast(ct[n]), acc0);
                bcc0 = TV.MultiplyAdd(h[(2 * n) + 1], TV.Broadcast(ct[n]), bcc0);
                acc1 = TV.MultiplyAdd(h[2 * (n + 1)], TV.Broadcast(ct[n + 1]), acc1);
                bcc1 = TV.MultiplyAdd(h[(2 * (n + 1)) + 1], TV.Broadcast(ct[n + 1]), bcc1);
                acc2 = TV.MultiplyAdd(h[2 * (n + 2)], TV.Broadcast(ct[n + 2]), acc2);
                bcc2 = TV.MultiplyAdd(h[(2 * (n + 2)) + 1], TV.Broadcast(ct[n + 2]), bcc2);
                acc3 = TV.MultiplyAdd(h[2 * (n + 3)], TV.Broadcast(ct[n + 3]), acc3);
                bcc3 = TV.MultiplyAdd(h[(2 * (n + 3)) + 1], TV.Broadcast(ct[n + 3]), bcc3);
            }

            for (; n < s.States; n++)
            {
                h[2 * n] = TV.MultiplyAdd(TV.Pow2(dt0 * a[2 * n]), h[2 * n], dtx0 * TV.Broadcast(bt[n]));
                h[(2 * n) + 1] = TV.MultiplyAdd(TV.Pow2(dt1 * a[(2 * n) + 1]), h[(2 * n) + 1], dtx1 * TV.Broadcast(bt[n]));
                acc0 = TV.MultiplyAdd(h[2 * n], TV.Broadcast(ct[n]), acc0);
                bcc0 = TV.MultiplyAdd(h[(2 * n) + 1], TV.Broadcast(ct[n]), bcc0);
            }

            var y0 = (acc0 + acc1) + (acc2 + acc3);
            var y1 = (bcc0 + bcc1) + (bcc2 + bcc3);
            long gateRow = gateStart + (t * s.ZStride);
            var gate0 = TV.LoadWide(p.Z, gateRow, s.BFloat16);
            var gate1 = TV.LoadWide(p.Z, gateRow + lanes, s.BFloat16);
            TV.StoreNarrow((y0 + (dSkip0 * x0)) * TV.Silu(gate0), p.Output, row, s.BFloat16);
            TV.StoreNarrow((y1 + (dSkip1 * x1)) * TV.Silu(gate1), p.Output, row + lanes, s.BFloat16);
        }

        for (int n = 0; n < s.States; n++)
        {
            TV.Store(h[2 * n], column);
            Scatter(column, lanes, state + n, s.States);
            TV.Store(h[(2 * n) + 1], column);
            Scatter(column, lanes, state + second + n, s.States);
        }
    }

    /// <summary>Channels [d0, d1) of batch item b by the native kernel (<see cref="NativeBf16Kernels.Scan16"/>): the same results as <see cref="ScanPair{TV}"/>.</summary>
    private static void Native16(ScanShape s, ScanBuffers p, int b, int d0, int d1)
    {
        int size = s.BFloat16 ? sizeof(ushort) : sizeof(float);
        long sequence = (long)b * s.Length * s.Channels;                       // element offset of (b, 0, 0)
        nint At(nint data, long elements, int bytes) => data + (nint)(elements * bytes);
        NativeBf16Kernels.Scan16(
            At(p.U, sequence, size), At(p.Delta, sequence, size), At(p.Z, (long)b * s.Length * s.ZStride, size), s.ZStride,
            At(p.B, (long)b * s.Length * 16, sizeof(float)), At(p.C, (long)b * s.Length * 16, sizeof(float)), p.A, p.DSkip, p.DeltaBias,
            At(p.State, (long)b * s.Channels * 16, sizeof(float)), At(p.Output, sequence, size), s.Length, s.Channels, d0, d1, s.BFloat16);
    }

    /// <summary>
    /// <paramref name="into"/>[j] = <paramref name="first"/>[j · <paramref name="stride"/>] for j &lt; <paramref name="count"/>:
    /// one state (or A column) of a block's channels, out of the channel-major [D, N] layout; returns <paramref name="into"/>.
    /// </summary>
    private static unsafe float* Gather(float* first, int stride, int count, float* into)
    {
        for (int j = 0; j < count; j++)
        {
            into[j] = first[(long)j * stride];
        }

        return into;
    }

    /// <summary>The inverse of <see cref="Gather"/>: <paramref name="first"/>[j · <paramref name="stride"/>] = <paramref name="from"/>[j].</summary>
    private static unsafe void Scatter(float* from, int count, float* first, int stride)
    {
        for (int j = 0; j < count; j++)
        {
            first[(long)j * stride] = from[j];
        }
    }

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

        long start = ((long)b * s.Length * s.Channels) + d0;                   // element offset of (b, 0, d0)
        long gateStart = ((long)b * s.Length * s.ZStride) + d0;                 // ... in z
        float* bm = (float*)p.B + ((long)b * s.Length * s.States);
        float* cm = (float*)p.C + ((long)b * s.Length * s.States);
        float* state = (float*)p.State + ((((long)b * s.Channels) + d0) * s.States); // (b, d0, 0) of [B,D,N]

        Vector<float>* h = stackalloc Vector<float>[s.States];                   // h[n], lanes = channels
        Vector<float>* a = stackalloc Vector<float>[s.States];                   // A[:, n] log₂e
        float* column = stackalloc float[lanes];                                 // one state of the block's channels
        for (int n = 0; n < s.States; n++)
        {
            h[n] = KernelMath.Load(Gather(state + n, s.States, lanes, column));
            a[n] = KernelMath.Load(Gather((float*)p.A + ((long)d0 * s.States) + n, s.States, lanes, column)) * KernelMath.Log2E;
        }

        var dSkip = KernelMath.Load((float*)p.DSkip + d0);
        var deltaBias = KernelMath.Load((float*)p.DeltaBias + d0);
        for (int t = 0; t < s.Length; t++)
        {
            long row = start + ((long)t * s.Channels);
            var dt = KernelMath.Softplus(KernelMath.LoadWide(p.Delta, row, s.BFloat16) + deltaBias);  // Δ_t
            var x = KernelMath.LoadWide(p.U, row, s.BFloat16);                              // x̃_t
            var dtx = dt * x;
            float* bt = bm + ((long)t * s.States);
            float* ct = cm + ((long)t * s.States);

            // y = C · h over four partial sums: one running sum would chain all d_state FMAs of a position
            // (d_state x 4 cycles of latency per position, which bounded the whole scan).
            Vector<float> acc0 = Vector<float>.Zero, acc1 = Vector<float>.Zero, acc2 = Vector<float>.Zero, acc3 = Vector<float>.Zero;
            int n = 0;
            for (; n + 4 <= s.States; n += 4)
            {
                h[n] = Vector.FusedMultiplyAdd(KernelMath.Pow2(dt * a[n]), h[n], dtx * bt[n]);                     // h = exp(ΔA) h + Δ B x̃
                h[n + 1] = Vector.FusedMultiplyAdd(KernelMath.Pow2(dt * a[n + 1]), h[n + 1], dtx * bt[n + 1]);
                h[n + 2] = Vector.FusedMultiplyAdd(KernelMath.Pow2(dt * a[n + 2]), h[n + 2], dtx * bt[n + 2]);
                h[n + 3] = Vector.FusedMultiplyAdd(KernelMath.Pow2(dt * a[n + 3]), h[n + 3], dtx * bt[n + 3]);
                acc0 = Vector.FusedMultiplyAdd(h[n], new Vector<float>(ct[n]), acc0);
                acc1 = Vector.FusedMultiplyAdd(h[n + 1], new Vector<float>(ct[n + 1]), acc1);
                acc2 = Vector.FusedMultiplyAdd(h[n + 2], new Vector<float>(ct[n + 2]), acc2);
                acc3 = Vector.FusedMultiplyAdd(h[n + 3], new Vector<float>(ct[n + 3]), acc3);
            }

            for (; n < s.States; n++)
            {
                h[n] = Vector.FusedMultiplyAdd(KernelMath.Pow2(dt * a[n]), h[n], dtx * bt[n]);
                acc0 = Vector.FusedMultiplyAdd(h[n], new Vector<float>(ct[n]), acc0);
            }

            var acc = (acc0 + acc1) + (acc2 + acc3);

            var gate = KernelMath.LoadWide(p.Z, gateStart + (t * s.ZStride), s.BFloat16);
            KernelMath.StoreNarrow((acc + (dSkip * x)) * KernelMath.Silu(gate), p.Output, row, s.BFloat16);
        }

        for (int n = 0; n < s.States; n++)
        {
            KernelMath.Store(h[n], column);
            Scatter(column, lanes, state + n, s.States);
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
            float* state = (float*)p.State + ((((long)b * s.Channels) + d) * s.States); // (b, d, 0) of [B,D,N]
            for (int n = 0; n < s.States; n++)
            {
                h[n] = state[n];
            }

            for (int t = 0; t < s.Length; t++)
            {
                long at = column + ((long)t * s.Channels);
                float dt = KernelMath.Softplus(KernelMath.Read(p.Delta, at, s.BFloat16) + ((float*)p.DeltaBias)[d]);
                float x = KernelMath.Read(p.U, at, s.BFloat16), gate = KernelMath.Read(p.Z, ((((long)b * s.Length) + t) * s.ZStride) + d, s.BFloat16);
                float* bt = (float*)p.B + (((long)b * s.Length) + t) * s.States;
                float* ct = (float*)p.C + (((long)b * s.Length) + t) * s.States;
                float acc = 0;
                for (int n = 0; n < s.States; n++)
                {
                    float a = ((float*)p.A)[((long)d * s.States) + n];
                    h[n] = (MathF.Exp(dt * a) * h[n]) + (dt * x * bt[n]);
                    acc += h[n] * ct[n];
                }

                KernelMath.Write(p.Output, at, (acc + (((float*)p.DSkip)[d] * x)) * KernelMath.Silu(gate), s.BFloat16);
            }

            for (int n = 0; n < s.States; n++)
            {
                state[n] = h[n];
            }
        }
    }
}
