using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// RMSNorm as mamba_ssm's fused Triton kernel computes it: statistics and the weight multiply in float32,
/// output cast back to the activation dtype. State-dict key <c>weight</c>.
/// </summary>
internal sealed class RmsNorm : nn.Module, IManagedKernelSwitch
{
    private readonly Scalar epsilon;                                        // kept alive by the module (see Scalars)
    private readonly float epsilonValue;
#pragma warning disable IDE1006 // state-dict key name
    private readonly Parameter weight;
#pragma warning restore IDE1006

    /// <summary>Allocates an uninitialised [width] weight.</summary>
    public RmsNorm(long width, double epsilon, ScalarType dtype, Device device)
        : base(nameof(RmsNorm))
    {
        this.epsilon = epsilon.ToScalar();
        epsilonValue = (float)epsilon;
        weight = new Parameter(torch.empty([width], dtype, device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>[width].</summary>
    public Parameter Weight => weight;

    /// <inheritdoc />
    public bool UseManagedKernels { get; set; } = true;

    /// <summary>
    /// mamba_ssm's fused add + norm: r = float32(<paramref name="hidden"/>) + <paramref name="residual"/> (a copy of
    /// the hidden states when null), then RMSNorm(r) in <paramref name="hidden"/>'s dtype. Returns both; the
    /// caller's tensors are left untouched. On the CPU, decode rows [B, D] and prefill sequences [B, L, D] take one fused kernel.
    /// </summary>
    public (Tensor Normalized, Tensor Residual) AddAndNormalize(Tensor hidden, Tensor? residual)
    {
        if (UseManagedKernels && AddRmsNormCpu.Supports(hidden, residual))
        {
            return AddRmsNormCpu.Run(hidden, residual, weight, epsilonValue);
        }

        var r = residual is null ? hidden.to(ScalarType.Float32, copy: true) : residual + hidden.to(ScalarType.Float32); // [..., C]
        return (Normalize(r, hidden.dtype), r);
    }

    /// <summary>RMSNorm of a float32 residual stream, returned in <paramref name="outputType"/>.</summary>
    public Tensor Normalize(Tensor residual, ScalarType outputType)
    {
        var r = residual.to(ScalarType.Float32);                                 // [..., C]
        var inverseRms = (r.square().mean([-1], keepdim: true) + epsilon).rsqrt(); // [..., 1]
        return (r * inverseRms * weight.to(ScalarType.Float32)).to(outputType);  // [..., C]
    }
}
