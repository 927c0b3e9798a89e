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
internal sealed class Linear : nn.Module<Tensor, Tensor>
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

    /// <summary>[out, in].</summary>
    public Parameter Weight => weight;

    /// <summary>[out], or null.</summary>
    public Parameter? Bias => bias;

    /// <inheritdoc />
    public override Tensor forward(Tensor input) => Apply(input, weight, bias);

    /// <summary>x Wᵀ without the bias (mamba_ssm applies dt_proj's bias later, in float32).</summary>
    public Tensor ForwardWithoutBias(Tensor input) => Apply(input, weight, null);

    /// <summary>x Wᵀ (+ b): the streaming GEMV for decode-sized inputs on the CPU, libtorch otherwise.</summary>
    public static Tensor Apply(Tensor input, Tensor weight, Tensor? bias) =>
        CpuGemv.Supports(input, weight) ? CpuGemv.Linear(input, weight, bias) : F.linear(input, weight, bias);
}
