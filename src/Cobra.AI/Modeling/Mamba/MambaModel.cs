using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// One pre-norm Mamba block (mamba_ssm <c>Block</c>, as HF's <c>modeling_mamba.py</c> runs it) with the fused
/// add + RMSNorm: r = h + r (h alone for the first block) in float32, then h = Mixer(RMSNorm(r)), the norm's
/// output in the model dtype. The residual stream r stays float32 across blocks (<c>residual_in_fp32</c>).
/// Keys: norm, mixer.
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

    /// <summary>
    /// Full-sequence path over <paramref name="input"/> ([B, L, D] hidden states in the model dtype and the float32
    /// residual, null for the first block): returns the mixer output and the new residual. The caller's tensors are
    /// left untouched.
    /// </summary>
    public BlockStream Forward(BlockStream input, MambaLayerState state, ScanImplementation scan)
    {
        var (normalized, r) = norm.AddAndNormalize(input.Hidden, input.Residual); // [B,L,D] model dtype, float32
        return new BlockStream(mixer.Forward(normalized, state, scan), r);
    }

    /// <summary>Recurrent path for one token per sequence: <paramref name="input"/>'s tensors are [B, D].</summary>
    public BlockStream Step(BlockStream input, MambaLayerState state)
    {
        var (normalized, r) = norm.AddAndNormalize(input.Hidden, input.Residual); // [B,D] model dtype, float32
        return new BlockStream(mixer.Step(normalized, state), r);
    }

    /// <summary>
    /// <see cref="Step"/> for <paramref name="step"/> ([B, D] rows) and <see cref="Forward"/> for <paramref name="chunk"/>
    /// ([R, L, D] positions) in one pass of the mixer's projections (<see cref="MambaMixer.StepWithChunk"/>).
    /// </summary>
    public (BlockStream Step, BlockStream Chunk) StepWithChunk(BlockStream step, MambaLayerState stepState, BlockStream chunk, MambaLayerState chunkState, ScanImplementation scan)
    {
        var (stepNormalized, stepResidual) = norm.AddAndNormalize(step.Hidden, step.Residual);     // [B,D], float32
        var (chunkNormalized, chunkResidual) = norm.AddAndNormalize(chunk.Hidden, chunk.Residual); // [R,L,D], float32
        var (stepOut, chunkOut) = mixer.StepWithChunk(stepNormalized, stepState, chunkNormalized, chunkState, scan);
        return (new BlockStream(stepOut, stepResidual), new BlockStream(chunkOut, chunkResidual));
    }
}

/// <summary>What flows between blocks: the mixer output (model dtype) and the float32 residual stream (null before the first block).</summary>
internal readonly record struct BlockStream(Tensor Hidden, Tensor? Residual);

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
    /// Full-sequence path: every block over <paramref name="hidden"/> [B, L, D] from <paramref name="state"/>
    /// (updated in place); returns the final normalised hidden states [B, L, D] in the model dtype.
    /// </summary>
    public Tensor Forward(Tensor hidden, MambaState state, ScanImplementation scan, Action<string, Tensor>? trace) =>
        Run([hidden], (i, s) => [layers[i].Forward(s[0], state.Layers[i], scan)], trace)[0];

    /// <summary>Recurrent path: one token per sequence, <paramref name="hidden"/> [B, D]; returns [B, D].</summary>
    public Tensor Step(Tensor hidden, MambaState state) =>
        Run([hidden], (i, s) => [layers[i].Step(s[0], state.Layers[i])], trace: null)[0];

    /// <summary>
    /// One decode step (<paramref name="stepHidden"/> [B, D] from <paramref name="stepState"/>) and one prefill chunk
    /// (<paramref name="chunkHidden"/> [R, L, D] from <paramref name="chunkState"/>) through every block together; both
    /// states are updated in place. Returns the final normalised hidden states [B, D] and [R, L, D].
    /// </summary>
    public (Tensor Step, Tensor Chunk) StepWithChunk(Tensor stepHidden, MambaState stepState, Tensor chunkHidden, MambaState chunkState, ScanImplementation scan)
    {
        var final = Run([stepHidden, chunkHidden], (i, s) =>
        {
            var (step, chunk) = layers[i].StepWithChunk(s[0], stepState.Layers[i], s[1], chunkState.Layers[i], scan);
            return [step, chunk];
        }, trace: null);
        return (final[0], final[1]);
    }

    /// <summary>Runs <paramref name="block"/> over every layer for each stream of <paramref name="inputs"/>, then the final norm.</summary>
    private Tensor[] Run(Tensor[] inputs, Func<int, BlockStream[], BlockStream[]> block, Action<string, Tensor>? trace)
    {
        var streams = inputs.Select(h => new BlockStream(h, null)).ToArray();
        for (int i = 0; i < layers.Count; i++)
        {
            // One scope per block, so a long prompt holds one block's temporaries at a time.
            using var scope = torch.NewDisposeScope();
            var next = block(i, streams);
            if (trace is not null)
            {
                trace($"llm.layer{i}.residual_in", next[0].Residual!);
                trace($"llm.layer{i}.mixer_out", next[0].Hidden);
            }

            // Keep the new residuals and mixer outputs; release the previous block's (never the caller's inputs).
            for (int k = 0; k < streams.Length; k++)
            {
                next[k].Residual!.MoveToOuterDisposeScope();
                next[k].Hidden.MoveToOuterDisposeScope();
                streams[k].Residual?.Dispose();
                if (!ReferenceEquals(streams[k].Hidden, inputs[k]))
                {
                    streams[k].Hidden.Dispose();
                }
            }

            streams = next;
        }

        var finals = new Tensor[streams.Length];
        for (int k = 0; k < streams.Length; k++)
        {
            (finals[k], _) = norm_f.AddAndNormalize(streams[k].Hidden, streams[k].Residual);
        }

        trace?.Invoke("llm.final_hidden", finals[0]);
        return finals;
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
