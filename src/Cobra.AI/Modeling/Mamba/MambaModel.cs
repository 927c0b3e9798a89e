using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// One pre-norm Mamba block with mamba_ssm's fused add + RMSNorm: the residual stream is carried in float32
/// across blocks and the mixer sees the normalised stream in the model dtype. Keys: norm, mixer.
/// </summary>
internal sealed class MambaBlock : nn.Module
{
    /// <summary>Allocates the block's parameters.</summary>
    public MambaBlock(MambaConfig config, ScalarType dtype, Device device)
        : base(nameof(MambaBlock))
    {
        Norm = new RmsNorm(config.DModel, config.NormEpsilon, dtype, device);
        Mixer = new MambaMixer(config, dtype, device);
        register_module("norm", Norm);
        register_module("mixer", Mixer);
    }

    /// <summary>Pre-mixer RMSNorm.</summary>
    public RmsNorm Norm { get; }

    /// <summary>The SSM mixer.</summary>
    public MambaMixer Mixer { get; }
}

/// <summary>
/// The Mamba backbone (<c>MambaLMHeadModel.backbone</c>): token embedding, <c>n_layer</c> blocks and the final
/// RMSNorm. Keys: embedding.weight, layers.{i}.*, norm_f.weight.
/// </summary>
internal sealed class MambaModel : nn.Module
{
    private readonly MambaBlock[] layers;

    /// <summary>Allocates the backbone's parameters.</summary>
    public MambaModel(MambaConfig config, ScalarType dtype, Device device)
        : base(nameof(MambaModel))
    {
        Embedding = new Parameter(torch.empty([config.PaddedVocabSize, config.DModel], dtype, device), requires_grad: false);
        layers = Enumerable.Range(0, config.NLayer).Select(_ => new MambaBlock(config, dtype, device)).ToArray();
        NormF = new RmsNorm(config.DModel, config.NormEpsilon, dtype, device);
        var embedding = new ParameterHolder(Embedding);
        register_module("embedding", embedding);
        register_module("layers", new ModuleList<MambaBlock>(layers));
        register_module("norm_f", NormF);
    }

    /// <summary>Token embedding [V_padded, d_model]; also the tied LM head.</summary>
    public Parameter Embedding { get; }

    /// <summary>The blocks.</summary>
    public IReadOnlyList<MambaBlock> Layers => layers;

    /// <summary>Final RMSNorm.</summary>
    public RmsNorm NormF { get; }

    /// <summary>
    /// Runs every block over <paramref name="hidden"/> [B, L, d_model] from <paramref name="state"/> (updated
    /// in place) and returns the final normalised hidden states [B, L, d_model] in the model dtype.
    /// </summary>
    public Tensor Forward(Tensor hidden, MambaState state, Func<int, MambaLayerState, Tensor, Tensor> mixerCall, Action<string, Tensor>? trace)
    {
        var dtype = hidden.dtype;
        Tensor? residual = null;                                                 // [B,L,D] float32
        var mixerOut = hidden;                                                   // [B,L,D]
        for (int i = 0; i < layers.Length; i++)
        {
            // One scope per block, so a long prompt holds one block's temporaries at a time.
            using var scope = torch.NewDisposeScope();
            var nextResidual = residual is null ? mixerOut.to(ScalarType.Float32) : residual + mixerOut.to(ScalarType.Float32);
            trace?.Invoke($"llm.layer{i}.residual_in", nextResidual);
            var normed = layers[i].Norm.Normalize(nextResidual, dtype);          // [B,L,D]
            var nextOut = mixerCall(i, state.Layers[i], normed);                 // [B,L,D]
            trace?.Invoke($"llm.layer{i}.mixer_out", nextOut);

            // Keep the new residual and mixer output; release the previous block's (never the caller's input).
            nextResidual.MoveToOuterDisposeScope();
            nextOut.MoveToOuterDisposeScope();
            residual?.Dispose();
            if (!ReferenceEquals(mixerOut, hidden))
            {
                mixerOut.Dispose();
            }

            residual = nextResidual;
            mixerOut = nextOut;
        }

        var finalResidual = residual is null ? mixerOut.to(ScalarType.Float32) : residual + mixerOut.to(ScalarType.Float32);
        var final = NormF.Normalize(finalResidual, dtype);                       // [B,L,D]
        trace?.Invoke("llm.final_hidden", final);
        return final;
    }
}

/// <summary>A module that only holds one parameter under the key <c>weight</c> (e.g. an embedding table).</summary>
internal sealed class ParameterHolder : nn.Module
{
    /// <summary>Registers <paramref name="weight"/> as <c>weight</c>.</summary>
    public ParameterHolder(Parameter weight)
        : base(nameof(ParameterHolder)) => register_parameter("weight", weight);
}
