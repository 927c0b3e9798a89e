using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// One Mamba mixer (mamba_ssm 1.2 <c>Mamba</c>, the non-fused path upstream takes during generation), with
/// the full-sequence path used for prefill and the single-token recurrent <see cref="Step"/> used for decode.
/// State-dict keys: in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj.
/// </summary>
internal sealed class MambaMixer : nn.Module, IManagedKernelSwitch
{
    private readonly MambaConfig config;
#pragma warning disable IDE1006 // field names are the state-dict keys
    private readonly Linear in_proj;
    private readonly Conv1dWeights conv1d;
    private readonly Linear x_proj;
    private readonly Linear dt_proj;
    private readonly Parameter A_log;
    private readonly Parameter D;
    private readonly Linear out_proj;
#pragma warning restore IDE1006

    /// <summary>Allocates the (uninitialised) parameters of one mixer.</summary>
    public MambaMixer(MambaConfig config, ScalarType dtype, Device device)
        : base(nameof(MambaMixer))
    {
        this.config = config;
        in_proj = new Linear(config.DModel, 2L * config.DInner, hasBias: false, dtype, device);
        conv1d = new Conv1dWeights(config.DInner, config.DConv, dtype, device);
        x_proj = new Linear(config.DInner, config.DtRank + (2L * config.DState), hasBias: false, dtype, device);
        dt_proj = new Linear(config.DtRank, config.DInner, hasBias: true, dtype, device);
        A_log = new Parameter(torch.empty([config.DInner, config.DState], dtype, device), requires_grad: false);
        D = new Parameter(torch.empty([config.DInner], dtype, device), requires_grad: false);
        out_proj = new Linear(config.DInner, config.DModel, hasBias: false, dtype, device);
        RegisterComponents();
    }

    /// <inheritdoc />
    public bool UseManagedKernels { get; set; } = true;

    /// <summary>
    /// Full-sequence path: consumes <paramref name="hidden"/> [B, L, d_model] starting from
    /// <paramref name="state"/> (zeros for a fresh prefill) and leaves the state after the last position in it.
    /// </summary>
    /// <param name="hidden">Normalised block input in the model dtype.</param>
    /// <param name="state">Layer state, updated in place.</param>
    /// <param name="scan">The scan implementation (the oracle in tests; <see cref="SelectiveScan.Run"/> otherwise).</param>
    /// <returns>Mixer output [B, L, d_model] in the model dtype.</returns>
    public Tensor Forward(Tensor hidden, MambaLayerState state, ScanImplementation scan) =>
        out_proj.forward(MixSequence(in_proj.forward(hidden), state, scan));   // [B,L,D]

    /// <summary>
    /// A decode step for <paramref name="stepHidden"/> [B, d_model] and a prefill chunk <paramref name="chunkHidden"/>
    /// [R, L, d_model] in one pass: in_proj, x_proj, dt_proj and out_proj run once over the B + R·L rows, so the chunk
    /// rides on the weight reads the step pays anyway (vLLM's chunked prefill beside decode), and a short chunk adds
    /// no calls of its own but the conv and the scan (each linear gives a row the same bits in any batch). Each part
    /// is otherwise exactly its own path (<see cref="Step"/>, <see cref="Forward"/>).
    /// </summary>
    /// <returns>The step's output [B, d_model] and the chunk's [R, L, d_model].</returns>
    public (Tensor Step, Tensor Chunk) StepWithChunk(Tensor stepHidden, MambaLayerState stepState, Tensor chunkHidden, MambaLayerState chunkState, ScanImplementation scan)
    {
        long b = stepHidden.shape[0], r = chunkHidden.shape[0], l = chunkHidden.shape[1];
        var xz = in_proj.forward(torch.cat([stepHidden, chunkHidden.reshape(r * l, -1)], 0)); // [B+R·L,2Di]
        var (xzStep, xzChunk) = (xz.narrow(0, 0, b), xz.narrow(0, b, r * l).reshape(r, l, -1)); // [B,2Di], [R,L,2Di]
        bool fused = FusedStepFor(xzStep, stepState);
        var xStep = ConvStep(xzStep, stepState, fused);                                       // [B,Di]
        var xChunk = ConvSequence(xzChunk, chunkState);                                       // [R,L,Di]
        var (xDbl, deltaRaw) = ProjectDelta(torch.cat([xStep, xChunk.reshape(r * l, -1)], 0)); // [B+R·L,R+2N], [B+R·L,Di]
        var yStep = SsmStep(xStep, deltaRaw.narrow(0, 0, b), xDbl.narrow(0, 0, b), xzStep, stepState, fused); // [B,Di]
        var yChunk = Scan(xChunk, deltaRaw.narrow(0, b, r * l).reshape(r, l, -1), xDbl.narrow(0, b, r * l).reshape(r, l, -1), xzChunk, chunkState, scan); // [R,L,Di]
        var output = out_proj.forward(torch.cat([yStep, yChunk.reshape(r * l, -1)], 0));     // [B+R·L,D]
        return (output.narrow(0, 0, b), output.narrow(0, b, r * l).reshape(r, l, -1));       // [B,D], [R,L,D]
    }

    /// <summary>Steps 2-4 of the full-sequence path: from in_proj's output [B, L, 2Di] to the gated SSM output [B, L, Di] (model dtype).</summary>
    private Tensor MixSequence(Tensor xz, MambaLayerState state, ScanImplementation scan)
    {
        var xConv = ConvSequence(xz, state);                                    // [B,L,Di]
        var (xDbl, deltaRaw) = ProjectDelta(xConv);                              // [B,L,R+2N], [B,L,Di]
        return Scan(xConv, deltaRaw, xDbl, xz, state, scan);                     // [B,L,Di]
    }

    /// <summary>2. Causal depthwise conv over [last d_conv−1 inputs of the state | x] + SiLU: [B, L, Di]; keeps the last d_conv inputs.</summary>
    private Tensor ConvSequence(Tensor xz, MambaLayerState state)
    {
        if (UseManagedKernels && CausalConvCpu.Supports(xz, state.Conv))
        {
            return CausalConvCpu.Forward(xz, state.Conv, conv1d.Weight, conv1d.Bias);
        }

        long length = xz.shape[1];
        var x = xz.narrow(-1, 0, config.DInner);                                 // [B,L,Di]
        var history = state.Conv.narrow(-1, 1, config.DConv - 1).to(xz.dtype);  // [B,Di,K−1]
        var convInput = torch.cat([history, x.transpose(1, 2)], -1);             // [B,Di,K−1+L]
        state.Conv.copy_(convInput.narrow(-1, length - 1, config.DConv));       // [B,Di,K]
        return F.silu(conv1d.Apply(convInput))                                   // [B,Di,L] (float32 accumulation)
                .to(xz.dtype).transpose(1, 2);                                   // [B,L,Di]
    }

    /// <summary>
    /// 4. Selective scan of x̃ [B, L, Di] with Δ (before its bias) and B, C (x_proj's output [B, L, R+2N]) from the
    /// layer's float32 SSM state, which it leaves un-rounded (as one long scan would); z from xz. [B, L, Di], model dtype.
    /// </summary>
    private Tensor Scan(Tensor xConv, Tensor deltaRaw, Tensor xDbl, Tensor xz, MambaLayerState state, ScanImplementation scan)
    {
        var z = xz.narrow(-1, config.DInner, config.DInner);                     // [B,L,Di]
        var bm = xDbl.narrow(-1, config.DtRank, config.DState);                  // [B,L,N]
        var cm = xDbl.narrow(-1, config.DtRank + config.DState, config.DState);  // [B,L,N]
        var a = UseManagedKernels && A_log.device_type == DeviceType.CPU ? SelectiveScanCpu.NegativeExp(A_log) : A(); // [Di,N], the decode step's values
        var (y, lastState) = scan(new ScanInputs(xConv, deltaRaw, a, bm, cm, D, z, dt_proj.Bias!), state.Ssm);
        state.Ssm.copy_(lastState);                                              // [B,Di,N]
        return y.to(xConv.dtype);                                                // [B,L,Di]
    }

    /// <summary>
    /// Recurrent path for one new token per sequence: <paramref name="hidden"/> [B, d_model] and the layer
    /// state after all previous positions; updates the state in place. Follows mamba_ssm's Triton
    /// <c>selective_state_update</c> over a cache in the model dtype: the state is read rounded to that dtype,
    /// the arithmetic is float32 and the output comes from the un-rounded new state. The state tensor stays
    /// float32 and the rounding happens on every read, which is the same thing (and leaves a prefill's
    /// float32 state intact until the first step reads it).
    /// </summary>
    public Tensor Step(Tensor hidden, MambaLayerState state)
    {
        var xz = in_proj.forward(hidden);                                        // [B,2Di]
        return out_proj.forward(MixStep(xz, state, FusedStepFor(xz, state)));   // [B,D]
    }

    /// <summary>The step as torch ops from in_proj's output [B, 2Di] (the device-generic path, and the oracle of <see cref="FusedStep"/>): [B, D].</summary>
    internal Tensor TorchStep(Tensor xz, MambaLayerState state) => out_proj.forward(MixStep(xz, state, fused: false));

    /// <summary>The same step with the elementwise work in two fused CPU kernels (<see cref="SelectiveStepCpu"/>): [B, D].</summary>
    internal Tensor FusedStep(Tensor xz, MambaLayerState state) => out_proj.forward(MixStep(xz, state, fused: true));

    /// <summary>The step between in_proj and out_proj: [B, 2Di] to the gated output [B, Di] in the model dtype.</summary>
    private Tensor MixStep(Tensor xz, MambaLayerState state, bool fused)
    {
        var xConv = ConvStep(xz, state, fused);                                 // [B,Di]
        var (xDbl, deltaRaw) = ProjectDelta(xConv);                              // [B,R+2N], [B,Di]
        return SsmStep(xConv, deltaRaw, xDbl, xz, state, fused);                 // [B,Di]
    }

    /// <summary>Whether the step's elementwise parts run as the two fused CPU kernels (<see cref="SelectiveStepCpu"/>) or as torch ops (the device-generic path, and their oracle).</summary>
    private bool FusedStepFor(Tensor xz, MambaLayerState state) => UseManagedKernels && SelectiveStepCpu.Supports(xz, state.Conv, state.Ssm);

    /// <summary>1. Conv: shift the window left by one, append x, convolve the window (float32 accumulation), SiLU: [B, Di].</summary>
    private Tensor ConvStep(Tensor xz, MambaLayerState state, bool fused)
    {
        if (fused)
        {
            return SelectiveStepCpu.ConvStep(xz, state.Conv, conv1d.Weight, conv1d.Bias); // [B,Di] (window updated)
        }

        var x = xz.narrow(-1, 0, config.DInner);                                 // [B,Di]
        state.Conv.copy_(torch.cat([state.Conv.narrow(-1, 1, config.DConv - 1), x.unsqueeze(-1).to(state.Conv.dtype)], -1)); // [B,Di,K]
        return F.silu(conv1d.ApplyToWindow(state.Conv)).to(xz.dtype);           // [B,Di]
    }

    /// <summary>
    /// 3. h = exp(ΔA) h + Δ B x̃;  y = C·h + D x̃;  out = y SiLU(z), with Δ = softplus(Δraw + b_Δ) and B, C from x_proj's
    /// output <paramref name="xDbl"/> [B, R+2N]: the gated output [B, Di] in the model dtype; the state updated.
    /// </summary>
    private Tensor SsmStep(Tensor xConv, Tensor deltaRaw, Tensor xDbl, Tensor xz, MambaLayerState state, bool fused)
    {
        if (fused)
        {
            return SelectiveStepCpu.SsmStep(xConv, deltaRaw, xDbl, xz, state.Ssm, A_log, D, dt_proj.Bias!); // [B,Di] (state updated)
        }

        var dtype = xz.dtype;
        var z = xz.narrow(-1, config.DInner, config.DInner);                     // [B,Di]
        var bm = xDbl.narrow(-1, config.DtRank, config.DState);                  // [B,N]
        var cm = xDbl.narrow(-1, config.DtRank + config.DState, config.DState);  // [B,N]
        var delta = F.softplus(deltaRaw.to(ScalarType.Float32) + dt_proj.Bias!.to(ScalarType.Float32), beta: 1, threshold: 20); // [B,Di]
        var xf = xConv.to(ScalarType.Float32);                                   // [B,Di]
        var decay = (delta.unsqueeze(-1) * A()).exp_();                          // [B,Di,N]
        var cached = dtype == ScalarType.Float32 ? state.Ssm : state.Ssm.to(dtype).to(ScalarType.Float32); // [B,Di,N]
        var h = torch.addcmul((delta * xf).unsqueeze(-1) * bm.to(ScalarType.Float32).unsqueeze(1), decay, cached, Scalars.One); // [B,Di,N]
        state.Ssm.copy_(h);
        var y = (h * cm.to(ScalarType.Float32).unsqueeze(1)).sum(-1)            // [B,Di]
                + (xf * D.to(ScalarType.Float32));
        y *= F.silu(z.to(ScalarType.Float32));                                   // [B,Di]
        return y.to(dtype);                                                      // [B,Di]
    }

    /// <summary>Input-dependent Δ, B, C (the step's 2., the sequence's 3.): x_proj's output Δ | B | C [..., R+2N], and dt_proj of its first R columns without the bias (mamba_ssm adds it in float32 later): [..., Di].</summary>
    private (Tensor XDbl, Tensor DeltaRaw) ProjectDelta(Tensor xConv)
    {
        var xDbl = x_proj.forward(xConv);                                         // [...,R+2N]
        return (xDbl, dt_proj.ForwardWithoutBias(xDbl.narrow(-1, 0, config.DtRank))); // [...,R+2N], [...,Di]
    }

    /// <summary>A = −exp(A_log), float32.</summary>
    private Tensor A() => A_log.to(ScalarType.Float32).exp().neg_();              // [Di,N]
}

/// <summary>Chooses how the full-sequence path scans (the oracle in tests, the fast path otherwise).</summary>
internal delegate (Tensor Output, Tensor LastState) ScanImplementation(in ScanInputs inputs, Tensor? initialState);

/// <summary>
/// The depthwise causal conv1d of a mixer (<c>nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner)</c>):
/// keys <c>weight</c> [d_inner, 1, d_conv] and <c>bias</c> [d_inner].
/// </summary>
internal sealed class Conv1dWeights : nn.Module
{
    private readonly long channels;
#pragma warning disable IDE1006 // state-dict key names
    private readonly Parameter weight;
    private readonly Parameter bias;
#pragma warning restore IDE1006

    /// <summary>Allocates uninitialised weights.</summary>
    public Conv1dWeights(long channels, long width, ScalarType dtype, Device device)
        : base("Conv1d")
    {
        this.channels = channels;
        weight = new Parameter(torch.empty([channels, 1, width], dtype, device), requires_grad: false);
        bias = new Parameter(torch.empty([channels], dtype, device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>[Di, 1, K].</summary>
    public Parameter Weight => weight;

    /// <summary>[Di].</summary>
    public Parameter Bias => bias;

    /// <summary>Valid (unpadded) depthwise conv of [B, Di, K−1+L] to [B, Di, L], in float32.</summary>
    public Tensor Apply(Tensor input) =>
        F.conv1d(input.to(ScalarType.Float32), weight.to(ScalarType.Float32), bias.to(ScalarType.Float32), groups: channels);

    /// <summary>The conv at the newest position of a [B, Di, K] window, in float32: [B, Di].</summary>
    public Tensor ApplyToWindow(Tensor window) =>
        (window.to(ScalarType.Float32) * weight.to(ScalarType.Float32).squeeze(1)).sum(-1) + bias.to(ScalarType.Float32);
}
