using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Cobra.AI.Modeling;

/// <summary>
/// LayerNorm with affine weight and bias (keys <c>weight</c>, <c>bias</c>), computed in float32 and returned
/// in the input dtype, as autocast runs it in the reference's bf16 passes.
/// </summary>
internal sealed class LayerNorm : nn.Module<Tensor, Tensor>, IManagedKernelSwitch
{
    private readonly double epsilon;
#pragma warning disable IDE1006 // state-dict key names
    private readonly Parameter weight;
    private readonly Parameter bias;
#pragma warning restore IDE1006

    /// <summary>Allocates uninitialised [width] weight and bias.</summary>
    public LayerNorm(long width, double epsilon, ScalarType dtype, Device device)
        : base(nameof(LayerNorm))
    {
        this.epsilon = epsilon;
        weight = new Parameter(torch.empty([width], dtype, device), requires_grad: false);
        bias = new Parameter(torch.empty([width], dtype, device), requires_grad: false);
        RegisterComponents();
    }

    /// <inheritdoc />
    public bool UseManagedKernels { get; set; } = true;

    /// <inheritdoc />
    public override Tensor forward(Tensor input) =>
        UseManagedKernels && LayerNormCpu.Supports(input, weight, bias) ? LayerNormCpu.Run(input, weight, bias, (float)epsilon) : TorchForward(input);

    /// <summary>The torch-op path (the device-generic one, and the oracle of <see cref="LayerNormCpu"/>).</summary>
    internal Tensor TorchForward(Tensor input) =>
        F.layer_norm(input.to(ScalarType.Float32), [input.shape[^1]], weight.to(ScalarType.Float32), bias.to(ScalarType.Float32), epsilon)
         .to(input.dtype);
}
