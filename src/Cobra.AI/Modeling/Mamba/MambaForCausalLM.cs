using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// Mamba language model with the LM head tied to the token embedding (Cobra's <c>MambaForCausalLM</c>).
/// Keys: backbone.*; a checkpoint's <c>lm_head.weight</c> feeds the same tensor (<see cref="TiedKeys"/>).
/// Every call runs under no-grad on the caller's thread; callers own the dispose scope.
/// </summary>
internal sealed class MambaForCausalLM : nn.Module, IManagedKernelSwitch
{
#pragma warning disable IDE1006 // field name is the state-dict key
    private readonly MambaModel backbone;
#pragma warning restore IDE1006

    /// <summary>Allocates an uninitialised model of the given size, dtype and device.</summary>
    public MambaForCausalLM(MambaConfig config, ScalarType dtype, Device device)
        : base(nameof(MambaForCausalLM))
    {
        Config = config;
        DType = dtype;
        Device = device;
        backbone = new MambaModel(config, dtype, device);
        RegisterComponents();
    }

    /// <summary>Checkpoint keys that alias a module key: the tied LM head.</summary>
    public static IReadOnlyDictionary<string, string> TiedKeys { get; } =
        new Dictionary<string, string> { ["lm_head.weight"] = "backbone.embedding.weight" };

    /// <summary>Sizes.</summary>
    public MambaConfig Config { get; }

    /// <summary>Parameter and activation dtype (float32 or bfloat16).</summary>
    public ScalarType DType { get; }

    /// <summary>Where the parameters live.</summary>
    public Device Device { get; }

    /// <inheritdoc />
    public bool UseManagedKernels { get; set; } = true;

    /// <summary>The backbone.</summary>
    public MambaModel Backbone => backbone;

    /// <summary>A zero state for <paramref name="batchSize"/> sequences (float32, see <see cref="MambaState.Zeros"/>).</summary>
    public MambaState NewState(long batchSize = 1) => MambaState.Zeros(Config, batchSize, Device);

    /// <summary>Token embeddings [B, L, d_model] of ids [B, L].</summary>
    public Tensor Embed(Tensor ids) =>
        Backbone.Embedding.index_select(0, ids.reshape(-1).to(Device)).view([.. ids.shape, Config.DModel]);

    /// <summary>
    /// Full-sequence (prefill) path: runs <paramref name="inputsEmbeds"/> [B, L, d_model] from
    /// <paramref name="state"/> (zero for a new sequence; updated in place) and returns float32 logits
    /// [B, V_padded] of the last position, or [B, L, V_padded] when <paramref name="allPositions"/>.
    /// </summary>
    /// <param name="inputsEmbeds">Input embeddings (image tokens can be spliced in before the text).</param>
    /// <param name="state">Recurrent state, updated in place.</param>
    /// <param name="allPositions">Return logits for every position, not just the last.</param>
    /// <param name="scan">Scan implementation; defaults to <see cref="SelectiveScan.Run"/> (<see cref="SelectiveScan.DeviceGeneric"/> without the managed kernels).</param>
    /// <param name="trace">Receives intermediate tensors by golden-kit tap name (valid only during the call).</param>
    public Tensor Forward(Tensor inputsEmbeds, MambaState state, bool allPositions = false, ScanImplementation? scan = null, Action<string, Tensor>? trace = null)
    {
        using var _ = torch.no_grad();
        scan ??= DefaultScan;
        var embeds = inputsEmbeds.to(DType).to(Device);                          // [B,L,D]
        trace?.Invoke("llm.inputs_embeds", embeds);
        var hidden = Backbone.Forward(embeds, state, scan, trace);
        state.TokenCount += inputsEmbeds.shape[1];
        var last = allPositions ? hidden : hidden.narrow(1, hidden.shape[1] - 1, 1).squeeze(1);
        return Logits(last);
    }

    /// <summary>
    /// Recurrent (decode) path: feeds one token per sequence, ids [B], through every layer's step and
    /// returns float32 logits [B, V_padded].
    /// </summary>
    public Tensor Step(Tensor tokenIds, MambaState state)
    {
        using var _ = torch.no_grad();
        var hidden = Embed(tokenIds.reshape(-1, 1)).squeeze(1);                  // [B,D]
        var final = Backbone.Step(hidden, state);                                // [B,D]
        state.TokenCount += 1;
        return Logits(final);                                                    // [B,V]
    }

    /// <summary>
    /// <see cref="Step"/> for <paramref name="tokenIds"/> [B] from <paramref name="stepState"/> and <see cref="Forward"/>
    /// for one prefill chunk <paramref name="chunkEmbeds"/> [R, L, D] from <paramref name="chunkState"/>, sharing every
    /// layer's in_proj and out_proj pass (and the LM head): the chunk costs its FLOPs, not another read of the weights.
    /// Both states are updated in place.
    /// </summary>
    /// <param name="tokenIds">The decoding rows' last tokens [B].</param>
    /// <param name="stepState">Their stacked state.</param>
    /// <param name="chunkEmbeds">The chunk's input embeddings [R, L, D].</param>
    /// <param name="chunkState">The chunk rows' stacked state.</param>
    /// <param name="chunkLogits">Also return the logits after the chunk's last position (when a prompt ends in it).</param>
    /// <returns>float32 logits [B, V_padded], and [R, V_padded] or null.</returns>
    public (Tensor StepLogits, Tensor? ChunkLogits) StepWithChunk(Tensor tokenIds, MambaState stepState, Tensor chunkEmbeds, MambaState chunkState, bool chunkLogits)
    {
        using var _ = torch.no_grad();
        long b = tokenIds.shape[0], r = chunkEmbeds.shape[0], l = chunkEmbeds.shape[1];
        var hidden = Embed(tokenIds.reshape(-1, 1)).squeeze(1);                  // [B,D]
        var (stepFinal, chunkFinal) = Backbone.StepWithChunk(hidden, stepState, chunkEmbeds.to(DType).to(Device), chunkState, DefaultScan); // [B,D], [R,L,D]
        stepState.TokenCount += 1;
        chunkState.TokenCount += l;
        if (!chunkLogits)
        {
            return (Logits(stepFinal), null);
        }

        var logits = Logits(torch.cat([stepFinal, chunkFinal.narrow(1, l - 1, 1).squeeze(1)], 0)); // [B+R,V]
        return (logits.narrow(0, 0, b), logits.narrow(0, b, r));
    }

    /// <summary>The scan prefill runs unless a caller picks one: the fused CPU scan with the managed kernels, else the device-generic one.</summary>
    private ScanImplementation DefaultScan => UseManagedKernels ? SelectiveScan.Run : SelectiveScan.DeviceGeneric;

    /// <summary>hidden Eᵀ in the model dtype, returned as float32.</summary>
    private Tensor Logits(Tensor hidden) =>
        Linear.Apply(hidden, Backbone.Embedding, null, UseManagedKernels).to(ScalarType.Float32);
}
