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
    private readonly double epsilon;

    /// <summary>Allocates an uninitialised [width] weight.</summary>
    public RmsNorm(long width, double epsilon, ScalarType dtype, Device device)
        : base(nameof(RmsNorm))
    {
        this.epsilon = epsilon;
        Weight = new Parameter(torch.empty([width], dtype, device), requires_grad: false);
        register_parameter("weight", Weight);
    }

    /// <summary>[width].</summary>
    public Parameter Weight { get; }

    /// <summary>RMSNorm of a float32 residual stream, returned in <paramref name="outputType"/>.</summary>
    public Tensor Normalize(Tensor residual, ScalarType outputType)
    {
        var r = residual.to(ScalarType.Float32);                                 // [..., C]
        var inverseRms = (r.square().mean([-1], keepdim: true) + epsilon).rsqrt(); // [..., 1]
        return (r * inverseRms * Weight.to(ScalarType.Float32)).to(outputType);  // [..., C]
    }
}
