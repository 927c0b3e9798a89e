using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Cobra.AI.Modeling;

/// <summary>
/// y = x Wᵀ (+ b), with state-dict keys <c>weight</c> and <c>bias</c> like <c>torch.nn.Linear</c>.
/// Parameters are allocated uninitialised: they are always loaded from a checkpoint (or filled by a test).
/// Field names are the state-dict keys (TorchSharp registers fields by name).
/// </summary>
internal sealed class Linear : nn.Module<Tensor, Tensor>, IManagedKernelSwitch
{
#pragma warning disable IDE1006 // state-dict key names
    private readonly Parameter weight;
    private readonly Parameter? bias;
#pragma warning restore IDE1006

    /// <summary>Allocates a [outFeatures, inFeatures] weight and, when asked, a bias.</summary>
    public Linear(long inFeatures, long outFeatures, bool hasBias, ScalarType dtype, Device device)
        : base(nameof(Linear))
    {
        weight = new Parameter(torch.empty([outFeatures, inFeatures], dtype, device), requires_grad: false);
        bias = hasBias ? new Parameter(torch.empty([outFeatures], dtype, device), requires_grad: false) : null;
        RegisterComponents();
    }

    /// <inheritdoc />
    public bool UseManagedKernels { get; set; } = true;

    /// <summary>[out, in].</summary>
    public Parameter Weight => weight;

    /// <summary>[out], or null.</summary>
    public Parameter? Bias => bias;

    /// <inheritdoc />
    public override Tensor forward(Tensor input) => Apply(input, weight, bias, UseManagedKernels);

    /// <summary>
    /// x Wᵀ + b, then <paramref name="epilogue"/>'s steps (× gamma, + residual), each rounded as the separate
    /// op the reference runs: fused into the native GEMM's output where it runs, as torch ops otherwise.
    /// </summary>
    public Tensor Forward(Tensor input, in LinearEpilogue epilogue)
    {
        if (UseManagedKernels && NativeBf16Kernels.Supports(input, weight, bias, epilogue))
        {
            return NativeBf16Kernels.Linear(input, weight, bias, epilogue);
        }

        var y = forward(input);                                                  // [..., N]
        y = epilogue.Gamma is null ? y : y * epilogue.Gamma;
        return epilogue.Residual is null ? y : epilogue.Residual + y;
    }

    /// <summary>x Wᵀ without the bias (mamba_ssm applies dt_proj's bias later, in float32).</summary>
    public Tensor ForwardWithoutBias(Tensor input) => Apply(input, weight, null, UseManagedKernels);

    /// <summary>
    /// x Wᵀ (+ b): for decode-sized inputs on the CPU (when <paramref name="managedKernels"/>) the native bf16
    /// dot-product GEMM where the CPU has AVX512-BF16, else the managed streaming GEMV; libtorch otherwise. A biased input
    /// of more than two dimensions goes in as 2-D rows: libtorch then runs one addmm, which adds the bias to
    /// the float32 accumulator before the single rounding (as the GPU's GEMM epilogue does), where an N-D
    /// input takes matmul + add and rounds a bf16 output twice.
    /// </summary>
    public static Tensor Apply(Tensor input, Tensor weight, Tensor? bias, bool managedKernels)
    {
        if (managedKernels && NativeBf16Kernels.Supports(input, weight, bias))
        {
            return NativeBf16Kernels.Linear(input, weight, bias);
        }

        if (managedKernels && CpuGemv.Supports(input, weight, bias))
        {
            return CpuGemv.Linear(input, weight, bias);
        }

        if (bias is null || input.dim() == 2)
        {
            return F.linear(input, weight, bias);
        }

        return F.linear(input.reshape(-1, input.shape[^1]), weight, bias).view([.. input.shape[..^1], weight.shape[0]]);
    }
}

/// <summary>
/// What follows a linear in the towers' blocks, in this order: × <see cref="Gamma"/> [N] (LayerScale), then
/// <see cref="Residual"/> [..., N] + the result (the block's residual add). Default: none.
/// </summary>
internal readonly record struct LinearEpilogue(Tensor? Gamma = null, Tensor? Residual = null);
