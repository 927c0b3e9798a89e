using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Cobra.AI.Modeling.Projection;

/// <summary>
/// Cobra's vision-to-language projectors (<c>cobra/util/nn_utils.py</c>), chosen by the arch specifier:
/// <c>fused-gelu-mlp</c> Linear-GELU-Linear-GELU-Linear, <c>gelu-mlp</c> Linear-GELU-Linear, <c>linear</c>.
/// Keys <c>projector.{i}.weight/bias</c> (an <c>nn.Sequential</c>; GELUs hold no parameters) or
/// <c>projector.weight/bias</c> for the linear kind.
/// </summary>
internal sealed class Projector : nn.Module<Tensor, Tensor>
{
    private readonly Linear[] layers;
#pragma warning disable IDE1006 // state-dict key name
    private readonly nn.Module projector;
#pragma warning restore IDE1006

    private Projector(Linear[] layers, nn.Module projector)
        : base(nameof(Projector))
    {
        this.layers = layers;
        this.projector = projector;
        RegisterComponents();
    }

    /// <summary>Output width (the LLM's d_model).</summary>
    public long OutputWidth => layers[^1].Weight.shape[0];

    /// <summary>
    /// Builds the projector an arch specifier names (e.g. <c>no-align+fused-gelu-mlp</c>) for
    /// <paramref name="visionWidth"/> → <paramref name="llmWidth"/>.
    /// </summary>
    /// <exception cref="NotSupportedException">The specifier names a projector this library does not implement.</exception>
    public static Projector Create(string archSpecifier, int visionWidth, int llmWidth, ScalarType dtype, Device device)
    {
        string kind = archSpecifier.Split('+')[^1];
        Linear L(int i, int o) => new(i, o, hasBias: true, dtype, device);
        return kind switch
        {
            "fused-gelu-mlp" => Sequential([L(visionWidth, 4 * visionWidth), L(4 * visionWidth, llmWidth), L(llmWidth, llmWidth)]),
            "gelu-mlp" => Sequential([L(visionWidth, llmWidth), L(llmWidth, llmWidth)]),
            "linear" => Single(L(visionWidth, llmWidth)),
            _ => throw new NotSupportedException($"Projector '{kind}' (arch_specifier '{archSpecifier}') is not supported; supported: fused-gelu-mlp, gelu-mlp, linear."),
        };
    }

    /// <summary>Linear layers in the chain (the engine runs them as separate units of an image's encoding).</summary>
    public int LayerCount => layers.Length;

    /// <summary>Linear layers with an exact GELU between consecutive ones.</summary>
    public override Tensor forward(Tensor features)
    {
        var x = features;
        for (int i = 0; i < layers.Length; i++)
        {
            x = ForwardLayer(i, x);
        }

        return x;
    }

    /// <summary>Step <paramref name="layer"/> of <see cref="forward"/>: the layer's linear, after a GELU for every layer but the first.</summary>
    public Tensor ForwardLayer(int layer, Tensor x) => layers[layer].forward(layer == 0 ? x : F.gelu(x));

    /// <summary>The <c>linear</c> kind: the module itself is <c>projector</c>.</summary>
    private static Projector Single(Linear linear) => new([linear], linear);

    /// <summary>Registers Linear i of the chain under Sequential index 2i (GELUs take the odd indices).</summary>
    private static Projector Sequential(Linear[] chain)
    {
        var sequence = new ParameterlessSequence();
        for (int i = 0; i < chain.Length; i++)
        {
            sequence.Add((2 * i).ToString(System.Globalization.CultureInfo.InvariantCulture), chain[i]);
        }

        return new Projector(chain, sequence);
    }

    /// <summary>A container whose children are named by their Sequential index.</summary>
    private sealed class ParameterlessSequence : nn.Module
    {
        public ParameterlessSequence()
            : base("Sequential")
        {
        }

        public void Add(string name, nn.Module module) => register_module(name, module);
    }
}
