using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Loading;

public sealed class StateDictLoaderTests : IDisposable
{
    private readonly TempFiles temp = new();

    public StateDictLoaderTests() => TorchRuntime.EnsureInitialized();

    public void Dispose() => temp.Dispose();

    /// <summary>A module whose only state is <c>embedding.weight</c> [4, 2], like a tied LM head.</summary>
    private sealed class Embedder : nn.Module
    {
        public Embedder() : base(nameof(Embedder)) => register_module("embedding", nn.Embedding(4, 2));
    }

    [Fact]
    public void Loads_a_linear_layer_and_converts_bf16_to_fp32()
    {
        var path = temp.Safetensors("linear.safetensors",
            """{"weight":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}""",
            [0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0x40, 0xa0, 0x40, 0xc0, 0x40, .. TempFiles.Floats(-1, -2)]);
        using var linear = nn.Linear(3, 2);
        using var st = SafetensorsFile.Open(path);

        var summary = StateDictLoader.Load(linear, st);

        Assert.Equal(new LoadSummary(2, 32), summary);
        Assert.Equal([1f, 2, 3, 4, 5, 6], linear.weight!.data<float>().ToArray());
        Assert.Equal([-1f, -2], linear.bias!.data<float>().ToArray());
        Assert.True(linear.weight.requires_grad);
    }

    [Fact]
    public void Missing_unexpected_and_misshaped_keys_are_reported_together_before_any_read()
    {
        var path = temp.Safetensors("wrong.safetensors",
            """{"weight":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]},"extra":{"dtype":"F32","shape":[1],"data_offsets":[24,28]}}""",
            TempFiles.Floats(1, 2, 3, 4, 5, 6, 7));
        using var linear = nn.Linear(3, 2);
        using var before = linear.weight!.clone();
        using var st = SafetensorsFile.Open(path);

        var error = Assert.Throws<InvalidDataException>(() => StateDictLoader.Load(linear, st));

        Assert.Contains(path, error.Message);
        Assert.Contains("1 missing key: bias", error.Message);
        Assert.Contains("1 unexpected key: extra", error.Message);
        Assert.Contains("1 mis-shaped key: weight (checkpoint [3, 2], module [2, 3])", error.Message);
        Assert.True(linear.weight.equal(before).all().item<bool>());
    }

    [Fact]
    public void Long_key_lists_are_truncated_with_a_count()
    {
        var entries = Enumerable.Range(0, 25).Select(i => $"\"x{i}\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[{i * 4},{(i * 4) + 4}]}}");
        var path = temp.Safetensors("many.safetensors", "{" + string.Join(",", entries) + "}", new byte[100]);
        using var embedder = new Embedder();
        using var st = SafetensorsFile.Open(path);

        var error = Assert.Throws<InvalidDataException>(() => StateDictLoader.Load(embedder, st));

        Assert.Contains("25 unexpected keys: x0, x1", error.Message);
        Assert.Contains("x19, ... and 5 more", error.Message);
        Assert.DoesNotContain("x20", error.Message);
        Assert.Contains("1 missing key: embedding.weight", error.Message);
    }

    [Fact]
    public void Tied_key_alone_satisfies_its_module_key()
    {
        var path = temp.Safetensors("head.safetensors",
            """{"lm_head.weight":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]}}""", TempFiles.Floats(1, 2, 3, 4, 5, 6, 7, 8));
        using var embedder = new Embedder();
        using var st = SafetensorsFile.Open(path);

        StateDictLoader.Load(embedder, st, new Dictionary<string, string> { ["lm_head.weight"] = "embedding.weight" });

        Assert.Equal([1f, 2, 3, 4, 5, 6, 7, 8], embedder.state_dict()["embedding.weight"].data<float>().ToArray());
    }

    [Fact]
    public void Tied_key_is_loaded_after_the_main_key_and_wins()
    {
        // The tied key comes first in the file; it must still be applied last.
        var path = temp.Safetensors("both.safetensors",
            """{"lm_head.weight":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"embedding.weight":{"dtype":"F32","shape":[4,2],"data_offsets":[32,64]}}""",
            [.. TempFiles.Floats(9, 9, 9, 9, 9, 9, 9, 9), .. TempFiles.Floats(1, 1, 1, 1, 1, 1, 1, 1)]);
        using var embedder = new Embedder();
        using var st = SafetensorsFile.Open(path);

        var summary = StateDictLoader.Load(embedder, st, new Dictionary<string, string> { ["lm_head.weight"] = "embedding.weight" });

        Assert.Equal(2, summary.Tensors);
        Assert.All(embedder.state_dict()["embedding.weight"].data<float>().ToArray(), v => Assert.Equal(9f, v));
    }

    [Fact]
    public void Loads_the_golden_projector_through_a_prefixed_pt_view()
    {
        var checkpoint = Path.Combine(AppContext.BaseDirectory, "fixtures", "tiny-a", "hub", "han1997", "cobra", "cobra+3b", "checkpoints", "latest-checkpoint.pt");
        using var pt = PyTorchCheckpoint.Open(checkpoint);
        using var projector = nn.Sequential(("0", nn.Linear(80, 320)), ("1", nn.GELU()), ("2", nn.Linear(320, 64)), ("3", nn.GELU()), ("4", nn.Linear(64, 64)));
        var source = pt.WithPrefix("model.projector.projector.");

        var summary = StateDictLoader.Load(projector, source);

        Assert.Equal(6, summary.Tensors);
        using var expected = source.Read("4.bias");
        Assert.True(projector.state_dict()["4.bias"].equal(expected).all().item<bool>());
    }
}
