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
#pragma warning disable IDE1006 // field names are the state-dict keys
    private readonly RmsNorm norm;
    private readonly MambaMixer mixer;
#pragma warning restore IDE1006

    /// <summary>Allocates the block's parameters.</summary>
    public MambaBlock(MambaConfig config, ScalarType dtype, Device device)
        : base(nameof(MambaBlock))
    {
        norm = new RmsNorm(config.DModel, config.NormEpsilon, dtype, device);
        mixer = new MambaMixer(config, dtype, device);
        RegisterComponents();
    }

    /// <summary>Pre-mixer RMSNorm.</summary>
    public RmsNorm Norm => norm;

    /// <summary>The SSM mixer.</summary>
    public MambaMixer Mixer => mixer;
}

/// <summary>
/// The Mamba backbone (<c>MambaLMHeadModel.backbone</c>): token embedding, <c>n_layer</c> blocks and the final
/// RMSNorm. Keys: embedding.weight, layers.{i}.*, norm_f.weight.
/// </summary>
internal sealed class MambaModel : nn.Module
{
#pragma warning disable IDE1006 // field names are the state-dict keys
    private readonly ParameterHolder embedding;
    private readonly ModuleList<MambaBlock> layers;
    private readonly RmsNorm norm_f;
#pragma warning restore IDE1006

    /// <summary>Allocates the backbone's parameters.</summary>
    public MambaModel(MambaConfig config, ScalarType dtype, Device device)
        : base(nameof(MambaModel))
    {
        embedding = new ParameterHolder(torch.empty([config.PaddedVocabSize, config.DModel], dtype, device));
        layers = new ModuleList<MambaBlock>(Enumerable.Range(0, config.NLayer).Select(_ => new MambaBlock(config, dtype, device)).ToArray());
        norm_f = new RmsNorm(config.DModel, config.NormEpsilon, dtype, device);
        RegisterComponents();
    }

    /// <summary>Token embedding [V_padded, d_model]; also the tied LM head.</summary>
    public Parameter Embedding => embedding.Weight;

    /// <summary>The blocks.</summary>
    public IList<MambaBlock> Layers => layers;

    /// <summary>
    /// Runs every block over <paramref name="hidden"/> [B, L, d_model] from <paramref name="state"/> (updated
    /// in place) and returns the final normalised hidden states [B, L, d_model] in the model dtype.
    /// </summary>
    public Tensor Forward(Tensor hidden, MambaState state, Func<int, MambaLayerState, Tensor, Tensor> mixerCall, Action<string, Tensor>? trace)
    {
        var dtype = hidden.dtype;
        Tensor? residual = null;                                                 // [B,L,D] float32
        var mixerOut = hidden;                                                   // [B,L,D]
        for (int i = 0; i < layers.Count; i++)
        {
            // One scope per block, so a long prompt holds one block's temporaries at a time.
            using var scope = torch.NewDisposeScope();
            // The first residual is a copy: the caller's input must survive this call untouched.
            var nextResidual = residual is null ? mixerOut.to(ScalarType.Float32, copy: true) : residual + mixerOut.to(ScalarType.Float32);
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
        var final = norm_f.Normalize(finalResidual, dtype);                       // [B,L,D]
        trace?.Invoke("llm.final_hidden", final);
        return final;
    }
}

/// <summary>A module that only holds one parameter under the key <c>weight</c> (e.g. an embedding table).</summary>
internal sealed class ParameterHolder : nn.Module
{
#pragma warning disable IDE1006 // state-dict key name
    private readonly Parameter weight;
#pragma warning restore IDE1006

    /// <summary>Holds <paramref name="data"/> as the parameter <c>weight</c>.</summary>
    public ParameterHolder(Tensor data)
        : base(nameof(ParameterHolder))
    {
        weight = new Parameter(data, requires_grad: false);
        RegisterComponents();
    }

    /// <summary>The parameter.</summary>
    public Parameter Weight => weight;
}
