using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// The recurrent state of one Mamba layer for a batch of sequences: the last <c>d_conv</c> pre-convolution
/// inputs and the SSM hidden state. Both are updated in place by the mixer.
/// </summary>
internal sealed class MambaLayerState : IDisposable
{
    /// <summary>Creates a layer state from existing tensors, taking ownership of them.</summary>
    public MambaLayerState(Tensor conv, Tensor ssm)
    {
        Conv = conv;
        Ssm = ssm;
    }

    /// <summary>Last d_conv inputs of the causal convolution, oldest first: [B, d_inner, d_conv].</summary>
    public Tensor Conv { get; }

    /// <summary>SSM hidden state h: [B, d_inner, d_state].</summary>
    public Tensor Ssm { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Conv.Dispose();
        Ssm.Dispose();
    }
}

/// <summary>
/// The whole recurrent state of a Mamba model for a batch of sequences: one <see cref="MambaLayerState"/>
/// per layer, of constant size whatever the sequence length. Its tensors live outside any dispose scope;
/// the owner disposes the state.
/// </summary>
internal sealed class MambaState : IDisposable
{
    private MambaState(MambaLayerState[] layers, long tokenCount)
    {
        Layers = layers;
        TokenCount = tokenCount;
    }

    /// <summary>Per-layer states, index = layer.</summary>
    public IReadOnlyList<MambaLayerState> Layers { get; }

    /// <summary>Number of sequence positions folded into this state (image and text tokens).</summary>
    public long TokenCount { get; internal set; }

    /// <summary>Bytes of tensor data held (all layers, both states).</summary>
    public long ByteSize => Layers.Sum(l => (l.Conv.NumberOfElements * l.Conv.ElementSize) + (l.Ssm.NumberOfElements * l.Ssm.ElementSize));

    /// <summary>Batch size.</summary>
    public long BatchSize => Layers[0].Ssm.shape[0];

    /// <summary>
    /// The zero state upstream starts every prefill from, in float32 whatever the model dtype. The reference
    /// scans a whole prompt with the state in float32 and rounds it to its bf16 cache once, at the end; keeping
    /// float32 here lets a prompt prefilled in chunks (or resumed from a snapshot) carry exactly what one
    /// prefill would, and the decode step applies the cache's rounding when it reads the state
    /// (<see cref="MambaMixer.Step"/>). The conv state holds pre-conv inputs, already model-dtype values.
    /// </summary>
    public static MambaState Zeros(MambaConfig config, long batchSize, Device device)
    {
        var layers = new MambaLayerState[config.NLayer];
        for (int i = 0; i < layers.Length; i++)
        {
            layers[i] = new MambaLayerState(
                torch.zeros([batchSize, config.DInner, config.DConv], ScalarType.Float32, device).DetachFromDisposeScope(),
                torch.zeros([batchSize, config.DInner, config.DState], ScalarType.Float32, device).DetachFromDisposeScope());
        }

        return new MambaState(layers, 0);
    }

    /// <summary>An independent copy (a conversation snapshot).</summary>
    public MambaState Clone()
    {
        using var _ = torch.no_grad();
        var layers = Layers
            .Select(l => new MambaLayerState(l.Conv.clone().DetachFromDisposeScope(), l.Ssm.clone().DetachFromDisposeScope()))
            .ToArray();
        return new MambaState(layers, TokenCount);
    }

    /// <summary>
    /// A state of <paramref name="rows"/> rows, its values unset, shaped, typed and placed like <paramref name="like"/>
    /// (a block of rows that states are copied into: the engine's decode batch).
    /// </summary>
    internal static MambaState Allocate(MambaState like, long rows)
    {
        using var _ = torch.no_grad();
        var layers = like.Layers
            .Select(l => new MambaLayerState(
                torch.empty([rows, .. l.Conv.shape[1..]], l.Conv.dtype, l.Conv.device).DetachFromDisposeScope(),   // [rows, d_inner, d_conv]
                torch.empty([rows, .. l.Ssm.shape[1..]], l.Ssm.dtype, l.Ssm.device).DetachFromDisposeScope()))     // [rows, d_inner, d_state]
            .ToArray();
        return new MambaState(layers, 0);
    }

    /// <summary>
    /// Rows [<paramref name="start"/>, start + <paramref name="count"/>) as views of this state's memory (contiguous:
    /// the batch dimension is the outermost): a step on the view updates these rows in place. Disposing the view
    /// releases only the views.
    /// </summary>
    internal MambaState View(long start, long count)
    {
        var layers = Layers
            .Select(l => new MambaLayerState(l.Conv.narrow(0, start, count).DetachFromDisposeScope(), l.Ssm.narrow(0, start, count).DetachFromDisposeScope()))
            .ToArray();
        return new MambaState(layers, TokenCount);
    }

    /// <summary>Copies every row of <paramref name="source"/> onto rows [<paramref name="at"/>, at + source's batch size).</summary>
    internal void CopyRowsFrom(long at, MambaState source) => CopyRows(source, 0, at, source.BatchSize);

    /// <summary>Copies row <paramref name="from"/> onto row <paramref name="to"/>.</summary>
    internal void CopyRow(long from, long to) => CopyRows(this, from, to, 1);

    /// <summary>Rows [<paramref name="from"/>, from + <paramref name="count"/>) of <paramref name="source"/> onto rows [<paramref name="at"/>, at + count) of this state, every layer.</summary>
    private void CopyRows(MambaState source, long from, long at, long count)
    {
        using var _ = torch.no_grad();
        for (int i = 0; i < Layers.Count; i++)
        {
            using var convFrom = source.Layers[i].Conv.narrow(0, from, count);
            using var ssmFrom = source.Layers[i].Ssm.narrow(0, from, count);
            using var convTo = Layers[i].Conv.narrow(0, at, count);
            using var ssmTo = Layers[i].Ssm.narrow(0, at, count);
            convTo.copy_(convFrom);
            ssmTo.copy_(ssmFrom);
        }
    }

    /// <summary>Concatenates single- or multi-sequence states along the batch dimension (batched decode).</summary>
    public static MambaState Stack(IReadOnlyList<MambaState> states)
    {
        ArgumentOutOfRangeException.ThrowIfZero(states.Count);
        using var _ = torch.no_grad();
        int layerCount = states[0].Layers.Count;
        var layers = new MambaLayerState[layerCount];
        for (int i = 0; i < layerCount; i++)
        {
            layers[i] = new MambaLayerState(
                torch.cat(states.Select(s => s.Layers[i].Conv).ToArray(), 0).DetachFromDisposeScope(),
                torch.cat(states.Select(s => s.Layers[i].Ssm).ToArray(), 0).DetachFromDisposeScope());
        }

        return new MambaState(layers, states.Max(s => s.TokenCount));
    }

    /// <summary>A new state holding only the given batch rows, in that order (the rest of a batch after some left).</summary>
    public MambaState Select(IReadOnlyList<long> rows)
    {
        ArgumentOutOfRangeException.ThrowIfZero(rows.Count);
        using var _ = torch.no_grad();
        using var index = torch.tensor(rows.ToArray(), device: Layers[0].Ssm.device);
        var layers = Layers
            .Select(l => new MambaLayerState(l.Conv.index_select(0, index).DetachFromDisposeScope(), l.Ssm.index_select(0, index).DetachFromDisposeScope()))
            .ToArray();
        return new MambaState(layers, TokenCount);
    }

    /// <summary>Splits a batched state back into one state per sequence.</summary>
    public MambaState[] Split()
    {
        using var _ = torch.no_grad();
        var result = new MambaState[BatchSize];
        for (int b = 0; b < result.Length; b++)
        {
            var layers = Layers
                .Select(l => new MambaLayerState(
                    l.Conv.narrow(0, b, 1).clone().DetachFromDisposeScope(),
                    l.Ssm.narrow(0, b, 1).clone().DetachFromDisposeScope()))
                .ToArray();
            result[b] = new MambaState(layers, TokenCount);
        }

        return result;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var layer in Layers)
        {
            layer.Dispose();
        }
    }
}
