using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Cobra.AI.Loading;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation.StateStore;

/// <summary>
/// Serialises a batch-1 <see cref="MambaState"/> for a store shared by several processes, and reads it back only
/// when every byte says it belongs here. Layout (little-endian):
/// <c>magic "CBRSTATE" | u16 version | u16 dtype | 32-byte model hash | i32 n_layer, d_inner, d_conv, d_state |
/// i64 state positions | i32 image-key bytes (-1: no image) | i32 prefix tokens | image key (UTF-8) | tokens (i32) |
/// per layer: conv bytes then ssm bytes, raw in the model dtype | XxHash128 of everything before it</c>.
/// The value carries its own image key and token prefix, so a key collision can never load a foreign state, and
/// concurrent writers of one key are harmless: whichever value wins is complete and self-validating.
/// </summary>
internal sealed class StateSnapshotCodec
{
    /// <summary>Bumped whenever the layout or the meaning of a state changes; other versions are ignored.</summary>
    public const ushort FormatVersion = 1;

    /// <summary>Bytes of the model hash.</summary>
    public const int ModelHashBytes = 32;

    private const int HeaderBytes = 8 + 2 + 2 + ModelHashBytes + (4 * 4) + 8 + 4 + 4;
    private const int TrailerBytes = 16;
    private const int MaxImageKeyBytes = 1024;
    private const int MaxPrefixTokens = 1 << 20;
    private static ReadOnlySpan<byte> Magic => "CBRSTATE"u8;

    private readonly byte[] modelHash;
    private readonly MambaConfig config;
    private readonly ScalarType dtype;
    private readonly Device device;
    private readonly int imageTokens;
    private readonly int convBytes;
    private readonly int ssmBytes;

    /// <summary>A codec for states of one model, in one dtype, living on one device.</summary>
    /// <param name="modelHash">The model's identity (<see cref="ModelFingerprint.Identity"/>), 32 bytes.</param>
    /// <param name="config">The LLM configuration (state shapes).</param>
    /// <param name="dtype">The dtype of both state tensors (the engine's state dtype, not necessarily the weights').</param>
    /// <param name="device">Where decoded states go.</param>
    /// <param name="imageTokens">LLM positions an image occupies (a state with an image holds those too).</param>
    public StateSnapshotCodec(byte[] modelHash, MambaConfig config, ScalarType dtype, Device device, int imageTokens)
    {
        ArgumentNullException.ThrowIfNull(modelHash);
        ArgumentOutOfRangeException.ThrowIfNotEqual(modelHash.Length, ModelHashBytes, nameof(modelHash));
        this.modelHash = modelHash.ToArray();
        this.config = config;
        this.dtype = dtype;
        this.device = device;
        this.imageTokens = imageTokens;
        int element = TensorBytes.ElementSize(dtype);
        convBytes = checked(config.DInner * config.DConv * element);
        ssmBytes = checked(config.DInner * config.DState * element);
    }

    /// <summary>The model identity every value must carry.</summary>
    public ReadOnlySpan<byte> ModelHash => modelHash;

    /// <summary>Raw tensor bytes of one state (all layers).</summary>
    public long PayloadBytes => (long)config.NLayer * (convBytes + ssmBytes);

    /// <summary>Bytes of the value <see cref="Encode"/> writes for this image key and prefix length.</summary>
    public long ValueBytes(string? imageKey, int prefixTokens) =>
        HeaderBytes + (imageKey is null ? 0 : Encoding.UTF8.GetByteCount(imageKey)) + (4L * prefixTokens) + PayloadBytes + TrailerBytes;

    /// <summary>
    /// The value for <paramref name="state"/> after <paramref name="tokens"/> (with <paramref name="imageKey"/>'s
    /// image before them). Reads tensors: call it on the inference thread. Throws <see cref="ArgumentException"/>
    /// for a state this codec cannot describe (batch, dtype or shape).
    /// </summary>
    public byte[] Encode(string? imageKey, IReadOnlyList<int> tokens, MambaState state)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(state);
        if (state.Layers.Count != config.NLayer)
        {
            throw new ArgumentException($"State has {state.Layers.Count} layers; the model has {config.NLayer}.", nameof(state));
        }

        byte[] key = imageKey is null ? [] : Encoding.UTF8.GetBytes(imageKey);
        if (key.Length > MaxImageKeyBytes || tokens.Count > MaxPrefixTokens)
        {
            throw new ArgumentException($"Image key ({key.Length} bytes, at most {MaxImageKeyBytes}) or prefix ({tokens.Count} tokens, at most {MaxPrefixTokens}) too long.", nameof(tokens));
        }

        var value = new byte[ValueBytes(imageKey, tokens.Count)];
        var span = value.AsSpan();
        Magic.CopyTo(span);
        BinaryPrimitives.WriteUInt16LittleEndian(span[8..], FormatVersion);
        BinaryPrimitives.WriteUInt16LittleEndian(span[10..], (ushort)dtype);
        modelHash.CopyTo(span[12..]);
        int at = 12 + ModelHashBytes;
        foreach (int dim in new[] { config.NLayer, config.DInner, config.DConv, config.DState })
        {
            BinaryPrimitives.WriteInt32LittleEndian(span[at..], dim);
            at += 4;
        }

        BinaryPrimitives.WriteInt64LittleEndian(span[at..], state.TokenCount);
        BinaryPrimitives.WriteInt32LittleEndian(span[(at + 8)..], imageKey is null ? -1 : key.Length);
        BinaryPrimitives.WriteInt32LittleEndian(span[(at + 12)..], tokens.Count);
        at = HeaderBytes;
        key.CopyTo(span[at..]);
        at += key.Length;
        foreach (int token in tokens)
        {
            BinaryPrimitives.WriteInt32LittleEndian(span[at..], token);
            at += 4;
        }

        using (torch.no_grad())
        {
            foreach (var layer in state.Layers)
            {
                at += CopyOut(layer.Conv, [1, config.DInner, config.DConv], span[at..]);
                at += CopyOut(layer.Ssm, [1, config.DInner, config.DState], span[at..]);
            }
        }

        XxHash128.Hash(span[..at], span[at..]);
        return value;
    }

    /// <summary>
    /// Checks a value without touching tensors (any thread): null when it is a complete, intact snapshot of this
    /// model and dtype for the first <paramref name="prefixLength"/> tokens of <paramref name="promptIds"/> after
    /// <paramref name="imageKey"/>'s image; otherwise why not.
    /// </summary>
    public string? Validate(ReadOnlySpan<byte> value, string? imageKey, IReadOnlyList<int> promptIds, int prefixLength)
    {
        ArgumentNullException.ThrowIfNull(promptIds);
        if (value.Length < HeaderBytes + TrailerBytes || !value[..8].SequenceEqual(Magic))
        {
            return "not a Cobra state snapshot";
        }

        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(value[8..]);
        if (version != FormatVersion)
        {
            return $"format version {version}, not {FormatVersion}";
        }

        if (!value.Slice(12, ModelHashBytes).SequenceEqual(modelHash))
        {
            return "written by another model (or precision)";
        }

        int at = 12 + ModelHashBytes;
        var dims = new int[4];
        for (int i = 0; i < 4; i++, at += 4)
        {
            dims[i] = BinaryPrimitives.ReadInt32LittleEndian(value[at..]);
        }

        ushort storedType = BinaryPrimitives.ReadUInt16LittleEndian(value[10..]);
        if (storedType != (ushort)dtype || dims[0] != config.NLayer || dims[1] != config.DInner || dims[2] != config.DConv || dims[3] != config.DState)
        {
            return $"dtype {storedType} and shape [{string.Join(", ", dims)}] differ from this model's {(ushort)dtype} and [{config.NLayer}, {config.DInner}, {config.DConv}, {config.DState}]";
        }

        long positions = BinaryPrimitives.ReadInt64LittleEndian(value[at..]);
        int keyBytes = BinaryPrimitives.ReadInt32LittleEndian(value[(at + 8)..]);
        int tokens = BinaryPrimitives.ReadInt32LittleEndian(value[(at + 12)..]);
        if (keyBytes is < -1 or > MaxImageKeyBytes || tokens is < 0 or > MaxPrefixTokens)
        {
            return "corrupt header";
        }

        long expectedLength = HeaderBytes + Math.Max(0, keyBytes) + (4L * tokens) + PayloadBytes + TrailerBytes;
        if (value.Length != expectedLength)
        {
            return $"{value.Length} bytes where the header implies {expectedLength} (truncated or corrupt)";
        }

        Span<byte> hash = stackalloc byte[TrailerBytes];
        XxHash128.Hash(value[..^TrailerBytes], hash);
        if (!hash.SequenceEqual(value[^TrailerBytes..]))
        {
            return "integrity hash mismatch (corrupt value)";
        }

        at = HeaderBytes;
        bool hasImage = keyBytes >= 0;
        if (hasImage != imageKey is not null || (hasImage && !value.Slice(at, keyBytes).SequenceEqual(Encoding.UTF8.GetBytes(imageKey!))))
        {
            return "for another image";
        }

        at += Math.Max(0, keyBytes);
        if (tokens != prefixLength || prefixLength >= promptIds.Count)
        {
            return $"holds {tokens} tokens, not a strict prefix of {prefixLength} of this {promptIds.Count}-token prompt";
        }

        for (int i = 0; i < tokens; i++, at += 4)
        {
            if (BinaryPrimitives.ReadInt32LittleEndian(value[at..]) != promptIds[i])
            {
                return $"for another conversation (token {i} differs)";
            }
        }

        long expectedPositions = (hasImage ? imageTokens : 0) + (long)tokens;
        return positions == expectedPositions ? null : $"holds {positions} positions, not {expectedPositions}";
    }

    /// <summary>
    /// The state in <paramref name="value"/>, on this codec's device, when <see cref="Validate"/> accepts it; null
    /// otherwise (with the reason). Creates tensors: call it on the inference thread. Never throws for bad bytes.
    /// </summary>
    public MambaState? Decode(byte[] value, string? imageKey, IReadOnlyList<int> promptIds, int prefixLength, out string? rejection)
    {
        ArgumentNullException.ThrowIfNull(value);
        rejection = Validate(value, imageKey, promptIds, prefixLength);
        if (rejection is not null)
        {
            return null;
        }

        int keyBytes = BinaryPrimitives.ReadInt32LittleEndian(value.AsSpan(HeaderBytes - 8));
        long positions = BinaryPrimitives.ReadInt64LittleEndian(value.AsSpan(HeaderBytes - 16));
        int at = HeaderBytes + Math.Max(0, keyBytes) + (4 * prefixLength);
        var state = MambaState.Zeros(config, 1, device);
        try
        {
            if (state.Layers[0].Ssm.dtype != dtype || state.Layers[0].Conv.dtype != dtype)
            {
                rejection = $"this engine keeps states in {state.Layers[0].Ssm.dtype}, the codec reads {dtype}";
                state.Dispose();
                return null;
            }

            using (torch.no_grad())
            {
                foreach (var layer in state.Layers)
                {
                    CopyIn(value.AsSpan(at, convBytes), layer.Conv);
                    at += convBytes;
                    CopyIn(value.AsSpan(at, ssmBytes), layer.Ssm);
                    at += ssmBytes;
                }
            }

            state.TokenCount = positions;
            return state;
        }
        catch
        {
            state.Dispose();
            throw;
        }
    }

    /// <summary>Writes a tensor's raw bytes (dtype-exact) into <paramref name="destination"/>; returns the count.</summary>
    private int CopyOut(Tensor tensor, long[] shape, Span<byte> destination)
    {
        if (tensor.dtype != dtype || !tensor.shape.SequenceEqual(shape))
        {
            throw new ArgumentException($"State tensor {tensor.dtype} [{string.Join(", ", tensor.shape)}] is not {dtype} [{string.Join(", ", shape)}] (batch 1 only).", nameof(tensor));
        }

        if (tensor.device_type == DeviceType.CPU && tensor.is_contiguous())
        {
            tensor.bytes.CopyTo(destination);
            return tensor.bytes.Length;
        }

        using var host = tensor.cpu().contiguous();
        host.bytes.CopyTo(destination);
        return host.bytes.Length;
    }

    private static void CopyIn(ReadOnlySpan<byte> source, Tensor destination)
    {
        if (destination.device_type == DeviceType.CPU && destination.is_contiguous())
        {
            source.CopyTo(destination.bytes);
            return;
        }

        using var host = torch.empty(destination.shape, destination.dtype, torch.CPU);
        source.CopyTo(host.bytes);
        destination.copy_(host);
    }
}
