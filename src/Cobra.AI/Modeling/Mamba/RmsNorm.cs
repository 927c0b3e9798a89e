using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// RMSNorm as mamba_ssm's fused Triton kernel computes it: statistics and the weight multiply in float32,
/// output cast back to the activation dtype. State-dict key <c>weight</c>.
/// </summary>
internal sealed class RmsNorm : nn.Module
{
    private readonly Scalar epsilon;                                        // kept alive by the module (see Scalars)
#pragma warning disable IDE1006 // state-dict key name
    private readonly Parameter weight;
#pragma warning restore IDE1006

    /// <summary>Allocates an uninitialised [width] weight.</summary>
    public RmsNorm(long width, double epsilon, ScalarType dtype, Device device)
        : base(nameof(RmsNorm))
    {
        this.epsilon = epsilon.ToScalar();
        weight = new Parameter(torch.empty([width], dtype, device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>[width].</summary>
    public Parameter Weight => weight;

    /// <summary>RMSNorm of a float32 residual stream, returned in <paramref name="outputType"/>.</summary>
    public Tensor Normalize(Tensor residual, ScalarType outputType)
    {
        var r = residual.to(ScalarType.Float32);                                 // [..., C]
        var inverseRms = (r.square().mean([-1], keepdim: true) + epsilon).rsqrt(); // [..., 1]
        return (r * inverseRms * weight.to(ScalarType.Float32)).to(outputType);  // [..., C]
    }
}
