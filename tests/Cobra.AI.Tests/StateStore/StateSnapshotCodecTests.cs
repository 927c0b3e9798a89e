using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;
using Cobra.AI.Generation.StateStore;
using Cobra.AI.Generation;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Text;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.StateStore;

/// <summary>The snapshot format: exact round trips, and every kind of foreign or damaged value refused without a throw.</summary>
public sealed class StateSnapshotCodecTests
{
    private const string Image = "3F2A";
    private static readonly MambaConfig Config = new() { DModel = 64, NLayer = 2, VocabSize = 581 };
    private static readonly int[] Prompt = [290, 357, 295, 200, 346, 0, 200, 290, 351, 295, 200, 17, 18];
    private const int Prefix = 11;

    public StateSnapshotCodecTests() => TorchRuntime.EnsureInitialized();

    internal static byte[] Identity(string name, ScalarType dtype, MambaConfig? config = null) =>
        ModelFingerprint.Identity(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(name)), config ?? Config, dtype);

    internal static StateSnapshotCodec Codec(ScalarType dtype, string model = "model-a", MambaConfig? config = null, int imageTokens = 16) =>
        new(Identity(model, dtype, config), config ?? Config, dtype, torch.CPU, imageTokens);

    /// <summary>A state with random contents in every tensor (a zero state would hide a missing copy).</summary>
    internal static MambaState RandomState(ScalarType dtype, long positions, int seed = 1, MambaConfig? config = null)
    {
        using var noGrad = torch.no_grad();
        using var generator = new torch.Generator((ulong)seed);                  // not the global one other tests draw from
        var state = MambaState.Zeros(config ?? Config, 1, torch.CPU);
        Assert.Equal(dtype, state.Layers[0].Ssm.dtype);                           // the engine keeps states in fp32 only
        foreach (var layer in state.Layers)
        {
            using var conv = torch.randn(layer.Conv.shape, ScalarType.Float32, generator: generator);
            using var ssm = torch.randn(layer.Ssm.shape, ScalarType.Float32, generator: generator);
            layer.Conv.copy_(conv.to(dtype));
            layer.Ssm.copy_(ssm.to(dtype));
        }

        state.TokenCount = positions;
        return state;
    }

    internal static void AssertBitEqual(MambaState expected, MambaState actual)
    {
        Assert.Equal(expected.TokenCount, actual.TokenCount);
        Assert.Equal(expected.Layers.Count, actual.Layers.Count);
        for (int i = 0; i < expected.Layers.Count; i++)
        {
            Assert.Equal(expected.Layers[i].Conv.dtype, actual.Layers[i].Conv.dtype);
            Assert.Equal(expected.Layers[i].Ssm.dtype, actual.Layers[i].Ssm.dtype);
            Assert.True(expected.Layers[i].Conv.bytes.SequenceEqual(actual.Layers[i].Conv.bytes), $"layer {i} conv differs");
            Assert.True(expected.Layers[i].Ssm.bytes.SequenceEqual(actual.Layers[i].Ssm.bytes), $"layer {i} ssm differs");
        }
    }

    [Theory]
    [InlineData(ScalarType.Float32, 4)]
    public void Round_trip_is_bit_exact_in_the_state_dtype_with_no_conversion(ScalarType dtype, int elementBytes)
    {
        var codec = Codec(dtype);
        using var state = RandomState(dtype, 16 + Prefix);
        byte[] value = codec.Encode(Image, Prompt[..Prefix], state);

        // Raw tensors in the model dtype: bf16 takes half the bytes of fp32, nothing is widened.
        long payload = Config.NLayer * (long)Config.DInner * (Config.DConv + Config.DState) * elementBytes;
        Assert.Equal(payload, codec.PayloadBytes);
        Assert.Equal(codec.ValueBytes(Image, Prefix), value.Length);
        Assert.InRange(value.Length - payload, 1, 200);

        using var decoded = codec.Decode(value, Image, Prompt, Prefix, out var rejection);
        Assert.Null(rejection);
        Assert.NotNull(decoded);
        AssertBitEqual(state, decoded);
    }

    [Fact]
    public void Text_only_snapshot_round_trips_and_is_refused_for_an_image_conversation()
    {
        var codec = Codec(ScalarType.Float32);
        using var state = RandomState(ScalarType.Float32, Prefix);
        byte[] value = codec.Encode(null, Prompt[..Prefix], state);
        using var decoded = codec.Decode(value, null, Prompt, Prefix, out _);
        AssertBitEqual(state, decoded!);
        Assert.Contains("another image", codec.Validate(value, Image, Prompt, Prefix), StringComparison.Ordinal);
    }

    [Fact]
    public void Another_model_another_precision_or_another_shape_is_refused()
    {
        using var state = RandomState(ScalarType.Float32, 16 + Prefix);
        byte[] value = Codec(ScalarType.Float32).Encode(Image, Prompt[..Prefix], state);

        Assert.Contains("another model", Codec(ScalarType.Float32, "model-b").Validate(value, Image, Prompt, Prefix), StringComparison.Ordinal);
        Assert.NotNull(Codec(ScalarType.BFloat16).Validate(value, Image, Prompt, Prefix));
        var wider = new MambaConfig { DModel = 64, NLayer = 2, VocabSize = 581, DState = 8 };
        Assert.NotNull(Codec(ScalarType.Float32, config: wider).Validate(value, Image, Prompt, Prefix));

        // Same identity bytes but different dims in the header: the shape check alone refuses it.
        var sameIdentity = new StateSnapshotCodec(Identity("model-a", ScalarType.Float32), wider, ScalarType.Float32, torch.CPU, 16);
        Assert.Contains("shape", sameIdentity.Validate(value, Image, Prompt, Prefix), StringComparison.Ordinal);
    }

    [Fact]
    public void Another_format_version_is_refused_even_with_a_valid_integrity_hash()
    {
        var codec = Codec(ScalarType.Float32);
        using var state = RandomState(ScalarType.Float32, 16 + Prefix);
        byte[] value = codec.Encode(Image, Prompt[..Prefix], state);
        BinaryPrimitives.WriteUInt16LittleEndian(value.AsSpan(8), StateSnapshotCodec.FormatVersion + 1);
        XxHash128.Hash(value.AsSpan(0, value.Length - 16), value.AsSpan(value.Length - 16));
        Assert.Contains("format version", codec.Validate(value, Image, Prompt, Prefix), StringComparison.Ordinal);
        Assert.Null(codec.Decode(value, Image, Prompt, Prefix, out _));
    }

    [Fact]
    public void Any_flipped_byte_truncation_or_garbage_is_refused_without_throwing()
    {
        var codec = Codec(ScalarType.Float32);
        using var state = RandomState(ScalarType.Float32, 16 + Prefix);
        byte[] value = codec.Encode(Image, Prompt[..Prefix], state);
        var random = new Random(5);
        for (int trial = 0; trial < 200; trial++)
        {
            byte[] damaged = (byte[])value.Clone();
            damaged[trial < 100 ? trial : random.Next(damaged.Length)] ^= (byte)(1 << random.Next(8));
            Assert.Null(codec.Decode(damaged, Image, Prompt, Prefix, out var rejection));
            Assert.NotNull(rejection);
        }

        Assert.Null(codec.Decode(value[..^1], Image, Prompt, Prefix, out _));
        Assert.Null(codec.Decode([.. value, 0], Image, Prompt, Prefix, out _));
        Assert.Null(codec.Decode([], Image, Prompt, Prefix, out _));
        var garbage = new byte[value.Length];
        random.NextBytes(garbage);
        Assert.Null(codec.Decode(garbage, Image, Prompt, Prefix, out _));
        Assert.Contains("integrity", codec.Validate(Flip(value, value.Length - 40), Image, Prompt, Prefix), StringComparison.Ordinal);
    }

    [Fact]
    public void A_snapshot_of_another_conversation_or_prefix_length_is_refused()
    {
        var codec = Codec(ScalarType.Float32);
        using var state = RandomState(ScalarType.Float32, 16 + Prefix);
        byte[] value = codec.Encode(Image, Prompt[..Prefix], state);
        int[] other = [.. Prompt];
        other[3] = 201;
        Assert.Contains("another conversation", codec.Validate(value, Image, other, Prefix), StringComparison.Ordinal);
        Assert.NotNull(codec.Validate(value, Image, Prompt, Prefix - 1));
        Assert.NotNull(codec.Validate(value, Image, Prompt[..Prefix], Prefix));           // not a strict prefix: nothing left to prefill
        Assert.NotNull(Codec(ScalarType.Float32, imageTokens: 729).Validate(value, Image, Prompt, Prefix)); // positions disagree
    }

    [Fact]
    public void Encode_refuses_a_batched_or_foreign_state()
    {
        var codec = Codec(ScalarType.Float32);
        using var batch = MambaState.Zeros(Config, 2, torch.CPU);
        Assert.Throws<ArgumentException>(() => codec.Encode(null, Prompt, batch));
        using var state = MambaState.Zeros(Config, 1, torch.CPU);
        Assert.Throws<ArgumentException>(() => Codec(ScalarType.BFloat16).Encode(null, Prompt, state));   // not the codec's dtype
    }

    [Fact]
    public void Keys_separate_models_images_and_prefixes()
    {
        var a = Identity("model-a", ScalarType.Float32);
        var b = Identity("model-b", ScalarType.Float32);
        string key = StateStoreKeys.For(a, Image, Prompt, Prefix);
        Assert.StartsWith($"cobra:state:v{StateSnapshotCodec.FormatVersion}:", key, StringComparison.Ordinal);
        Assert.Equal(key, StateStoreKeys.For(a, Image, [.. Prompt[..Prefix], 9, 9], Prefix));
        Assert.NotEqual(key, StateStoreKeys.For(b, Image, Prompt, Prefix));
        Assert.NotEqual(key, StateStoreKeys.For(a, "3F2B", Prompt, Prefix));
        Assert.NotEqual(key, StateStoreKeys.For(a, null, Prompt, Prefix));
        Assert.NotEqual(key, StateStoreKeys.For(a, Image, Prompt, Prefix - 1));
        Assert.NotEqual(Identity("model-a", ScalarType.BFloat16), a);
    }

    [Fact]
    public void Candidate_prefixes_are_the_prompt_ends_and_answer_ends_of_earlier_turns_longest_first()
    {
        var tokenizer = CobraTokenizer.FromFile(Path.Combine(Golden.TinyAHub, "xiuyul", "mamba-2.8b-zephyr", "tokenizer.json"));
        var boundaries = PromptBoundaries.ForZephyr(tokenizer);
        (string, string)[] turns = [("user", "What is going on?"), ("assistant", "A cobra on a rock."), ("user", "Is it red?"), ("assistant", "No."), ("user", "Why?")];
        var ids = tokenizer.Encode(ZephyrPromptBuilder.Build(turns));

        // What the engine stores: the state after each whole prompt, and before each answer's end-of-text.
        int Prompt(int turnCount) => tokenizer.Encode(ZephyrPromptBuilder.Build(turns[..turnCount])).Count;
        int[] expected = [Prompt(4) - 1, Prompt(3), Prompt(2) - 1, Prompt(1)];
        Assert.Equal(expected, boundaries.Candidates(ids, hasImage: false));
        Assert.All(expected, p => Assert.True(p < ids.Count));
        Assert.Equal(tokenizer.EosTokenId, ids[Prompt(2) - 1]);
        var firstTurn = tokenizer.Encode(ZephyrPromptBuilder.Build(turns[..1]));
        Assert.Empty(boundaries.Candidates(firstTurn, hasImage: false));          // a first turn has no earlier state...

        // ...but with an image, the state after the image and "<|user|>\n" may come from another conversation about it.
        int userHeader = tokenizer.Encode("<|user|>\n").Count;
        Assert.Equal([userHeader], boundaries.Candidates(firstTurn, hasImage: true));
        Assert.Equal([.. expected, userHeader], boundaries.Candidates(ids, hasImage: true));
    }

    [Fact]
    public void Model_fingerprint_is_the_same_for_two_loads_and_changes_with_a_weight_or_the_precision()
    {
        var files = CobraModelFiles.FromHubMirror(Golden.TinyAHub);
        using var first = CobraPipeline.Load(files, torch.CPU, Precision.Float32);
        using var second = CobraPipeline.Load(files, torch.CPU, Precision.Float32);
        byte[] fingerprint = ModelFingerprint.Compute(first);
        Assert.Equal(fingerprint, ModelFingerprint.Compute(second));

        using (torch.no_grad())
        {
            var weight = second.Model.LanguageModel.state_dict().First(kv => kv.Key.EndsWith("in_proj.weight", StringComparison.Ordinal)).Value;
            weight.view(-1)[0] = weight.view(-1)[0] + 1e-3f;                      // a sampled position (the first)
        }

        Assert.NotEqual(fingerprint, ModelFingerprint.Compute(second));
        using var bf16 = CobraPipeline.Load(files, torch.CPU, Precision.BFloat16);
        Assert.NotEqual(fingerprint, ModelFingerprint.Compute(bf16));
    }

    private static byte[] Flip(byte[] value, int at)
    {
        byte[] copy = (byte[])value.Clone();
        copy[at] ^= 0x10;
        return copy;
    }
}
