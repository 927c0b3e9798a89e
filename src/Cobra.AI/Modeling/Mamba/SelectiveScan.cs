using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// Inputs of the selective scan for a whole sequence, in the [batch, length, channels] layout the
/// projections produce. Shapes: U, Delta, Z [B, L, D]; A [D, N]; B, C [B, L, N]; DSkip, DeltaBias [D].
/// </summary>
/// <param name="U">Post-convolution activation x̃.</param>
/// <param name="Delta">Δ before its bias and softplus (the dt_proj matmul output).</param>
/// <param name="A">A = −exp(A_log), float32.</param>
/// <param name="B">Input matrix per position.</param>
/// <param name="C">Output matrix per position.</param>
/// <param name="DSkip">The D skip weight.</param>
/// <param name="Z">Gate (the raw z half of in_proj).</param>
/// <param name="DeltaBias">dt_proj bias, added in float32 inside the scan.</param>
internal readonly record struct ScanInputs(Tensor U, Tensor Delta, Tensor A, Tensor B, Tensor C, Tensor DSkip, Tensor Z, Tensor DeltaBias);

/// <summary>
/// Mamba's selective scan (Gu &amp; Dao 2023, Algorithm 2), all arithmetic in float32 as in mamba_ssm:
/// <code>
///   Δ_t = softplus(δ_t + b_Δ)                       (threshold 20)
///   h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x̃_t        (per channel d and state n)
///   y_t = C_t · h_t + D ⊙ x̃_t
///   out_t = y_t ⊙ SiLU(z_t)
/// </code>
/// Three implementations compute the same thing: <see cref="Sequential"/> is the plain loop of
/// mamba_ssm's <c>selective_scan_ref</c>, kept as the test oracle; <see cref="Chunked"/> is a two-level
/// chunked parallel scan built from tensor ops (runs on any device); <see cref="SelectiveScanCpu"/> is a
/// fused SIMD kernel used for CPU tensors. Each returns the gated output [B, L, D] (float32) and the final
/// state [B, D, N] (float32).
/// </summary>
internal static class SelectiveScan
{
    /// <summary>Default chunk length of <see cref="Chunked"/>.</summary>
    public const int DefaultChunkSize = 32;

    /// <summary>Runs the fastest correct implementation for the inputs' device.</summary>
    public static (Tensor Output, Tensor LastState) Run(in ScanInputs inputs, Tensor? initialState) =>
        inputs.U.device_type == DeviceType.CPU
            ? SelectiveScanCpu.Run(inputs, initialState)
            : DeviceGeneric(inputs, initialState);

    /// <summary>The torch-op path every device runs (CUDA's, and the CPU's with the managed kernels off).</summary>
    public static (Tensor Output, Tensor LastState) DeviceGeneric(in ScanInputs inputs, Tensor? initialState) =>
        Chunked(inputs, initialState);

    /// <summary>
    /// The reference: materialise exp(ΔA) and ΔBx̃ for every position, then step through the sequence
    /// one position at a time. O(L) dependent steps.
    /// </summary>
    public static (Tensor Output, Tensor LastState) Sequential(in ScanInputs inputs, Tensor? initialState)
    {
        var (u, delta, a, bm, cm) = Prepare(inputs);                              // u, Δ [B,L,D]; A [D,N]; B, C [B,L,N]
        long length = u.shape[1];
        var deltaA = (delta.unsqueeze(-1) * a).exp_();                           // [B,L,D,N]
        var deltaBu = (delta * u).unsqueeze(-1) * bm.unsqueeze(2);               // [B,L,D,N]
        var h = InitialState(inputs, initialState);                              // [B,D,N]
        var ys = new Tensor[length];
        for (long t = 0; t < length; t++)
        {
            h = deltaA.select(1, t) * h + deltaBu.select(1, t);                  // [B,D,N]
            ys[t] = (h * cm.select(1, t).unsqueeze(1)).sum(-1);                  // [B,D]
        }

        var y = torch.stack(ys, 1);                                              // [B,L,D]
        return (Gate(y, u, inputs), h);
    }

    /// <summary>
    /// Two-level chunked scan. The sequence is cut into chunks of <paramref name="chunkSize"/>; (1) every
    /// chunk is scanned from a zero state, all chunks at once, one position at a time; (2) the chunk end
    /// states are chained sequentially with each chunk's total decay exp(A ΣΔ) to get every chunk's true
    /// start state; (3) every chunk is scanned again from its true start, all chunks at once, emitting y.
    /// About 2·chunk + L/chunk dependent steps instead of L, each over L/chunk times more data.
    /// Padding positions have Δ = 0, so they leave the state unchanged.
    /// </summary>
    public static (Tensor Output, Tensor LastState) Chunked(in ScanInputs inputs, Tensor? initialState, int chunkSize = DefaultChunkSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 1);
        var (u, delta, a, bm, cm) = Prepare(inputs);                             // u, Δ [B,L,D]; A [D,N]; B, C [B,L,N]
        long length = u.shape[1];
        long chunks = (length + chunkSize - 1) / chunkSize;
        long padded = chunks * chunkSize;

        Tensor ByStep(Tensor t) =>                                               // [B,L,X] -> [T,B,nC,X]
            F.pad(t, [0, 0, 0, padded - length])
             .view(t.shape[0], chunks, chunkSize, t.shape[2])
             .permute(2, 0, 1, 3)
             .contiguous();

        var deltaSteps = ByStep(delta);                                          // [T,B,nC,D]
        var deltaUSteps = ByStep(delta * u);                                     // [T,B,nC,D]
        var bSteps = ByStep(bm);                                                 // [T,B,nC,N]
        var cSteps = ByStep(cm);                                                 // [T,B,nC,N]

        // (1) Local scans from zero; h is [B,nC,D,N].
        var h = ScanChunks(torch.zeros([u.shape[0], chunks, u.shape[2], a.shape[1]], ScalarType.Float32, u.device), deltaSteps, deltaUSteps, bSteps, a, cSteps: null, out _);

        // (2) Chain the chunks: start_c = decay_{c−1} ⊙ start_{c−1} + local_end_{c−1}.
        var chunkDecay = (deltaSteps.sum(0L).unsqueeze(-1) * a).exp_();          // [B,nC,D,N]
        var carry = InitialState(inputs, initialState);                          // [B,D,N]
        var starts = new Tensor[chunks];
        for (long c = 0; c < chunks; c++)
        {
            starts[c] = carry;
            carry = chunkDecay.select(1, c) * carry + h.select(1, c);            // [B,D,N]
        }

        // (3) Rescan from the true starts, emitting y.
        ScanChunks(torch.stack(starts, 1), deltaSteps, deltaUSteps, bSteps, a, cSteps, out var ySteps); // ySteps [T,B,nC,D]
        var y = ySteps!.permute(1, 2, 0, 3)                                      // [B,nC,T,D]
                       .reshape(u.shape[0], padded, u.shape[2])                  // [B,L',D]
                       .narrow(1, 0, length);                                    // [B,L,D]
        return (Gate(y, u, inputs), carry);
    }

    private static Tensor ScanChunks(Tensor h, Tensor deltaSteps, Tensor deltaUSteps, Tensor bSteps, Tensor a, Tensor? cSteps, out Tensor? ySteps)
    {
        long steps = deltaSteps.shape[0];
        var ys = cSteps is null ? null : new Tensor[steps];
        for (long t = 0; t < steps; t++)
        {
            var decay = (deltaSteps[t].unsqueeze(-1) * a).exp_();                // [B,nC,D,N]
            var input = deltaUSteps[t].unsqueeze(-1) * bSteps[t].unsqueeze(2);   // [B,nC,D,N]
            h = torch.addcmul(input, decay, h, Scalars.One);                               // [B,nC,D,N]
            if (ys is not null)
            {
                ys[t] = (h * cSteps![t].unsqueeze(2)).sum(-1);                   // [B,nC,D]
            }
        }

        ySteps = ys is null ? null : torch.stack(ys, 0);                         // [T,B,nC,D]
        return h;
    }

    /// <summary>Float32 u, Δ = softplus(δ + b_Δ), A, B, C, as mamba_ssm casts them before scanning.</summary>
    internal static (Tensor U, Tensor Delta, Tensor A, Tensor B, Tensor C) Prepare(in ScanInputs inputs) =>
        (inputs.U.to(ScalarType.Float32),
         F.softplus(inputs.Delta.to(ScalarType.Float32) + inputs.DeltaBias.to(ScalarType.Float32), beta: 1, threshold: 20),
         inputs.A.to(ScalarType.Float32),
         inputs.B.to(ScalarType.Float32),
         inputs.C.to(ScalarType.Float32));

    private static Tensor InitialState(in ScanInputs inputs, Tensor? initialState) =>
        initialState?.to(ScalarType.Float32)
        ?? torch.zeros([inputs.U.shape[0], inputs.U.shape[2], inputs.A.shape[1]], ScalarType.Float32, inputs.U.device);

    /// <summary>out = (y + D ⊙ x̃) ⊙ SiLU(z), float32.</summary>
    private static Tensor Gate(Tensor y, Tensor u, in ScanInputs inputs) =>
        (y + u * inputs.DSkip.to(ScalarType.Float32)) * F.silu(inputs.Z.to(ScalarType.Float32));
}
