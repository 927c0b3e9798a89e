using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>
/// Properties that hold for any Mamba size: the recurrent step path equals the full-sequence path, and a
/// prefill split in pieces equals one prefill. Run on random weights of several shapes.
/// </summary>
public sealed class MambaConsistencyTests
{
    public MambaConsistencyTests() => TorchRuntime.EnsureInitialized();

    public static TheoryData<int, int, int, int?> Shapes() => new()
    {
        { 16, 4, 2, null },
        { 8, 3, 3, null },
        { 4, 2, 1, 3 },
        { 1, 5, 2, 7 },
        { 7, 1, 2, null },
    };

    private static MambaConfig Config(int dState, int dConv, int layers, int? dtRank) =>
        new() { DModel = 24, NLayer = layers, VocabSize = 61, DState = dState, DConv = dConv, DtRankOverride = dtRank };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Step_path_equals_full_sequence_path(int dState, int dConv, int layers, int? dtRank)
    {
        using var scope = torch.NewDisposeScope();
        using var model = new MambaForCausalLM(Config(dState, dConv, layers, dtRank), ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, seed: dState * 100 + dConv);
        long[] ids = [3, 17, 0, 42, 5, 5, 60, 1, 29, 8, 13];

        using var full = model.NewState();
        var expected = model.Forward(model.Embed(torch.tensor(ids).unsqueeze(0)), full, allPositions: true, SelectiveScan.Sequential).squeeze(0); // [L,V]

        using var stepped = model.NewState();
        var rows = new List<Tensor> { model.Forward(model.Embed(torch.tensor(ids[..1]).unsqueeze(0)), stepped) };
        foreach (long id in ids[1..])
        {
            rows.Add(model.Step(torch.tensor(new[] { id }), stepped));
        }

        Golden.AssertClose(expected, torch.cat(rows, 0), "step logits vs full sequence");
        AssertSameState(full, stepped);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(10)]
    public void Prefill_in_two_pieces_equals_one_prefill(int split)
    {
        using var scope = torch.NewDisposeScope();
        using var model = new MambaForCausalLM(Config(16, 4, 2, null), ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, seed: 5);
        var embeds = model.Embed(torch.tensor(new long[] { 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11 }).unsqueeze(0)); // [1,11,D]

        using var once = model.NewState();
        var expected = model.Forward(embeds, once);
        using var pieces = model.NewState();
        model.Forward(embeds.narrow(1, 0, split), pieces);
        var actual = model.Forward(embeds.narrow(1, split, 11 - split), pieces);

        Golden.AssertClose(expected, actual, "logits after split prefill");
        AssertSameState(once, pieces);
        Assert.Equal(11, pieces.TokenCount);
    }

    [Fact]
    public void Forward_leaves_the_callers_embeddings_untouched()
    {
        using var scope = torch.NewDisposeScope();
        using var model = new MambaForCausalLM(Config(16, 4, 2, null), ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, seed: 6);
        var embeds = model.Embed(torch.tensor(new long[] { 1, 2, 3 }).unsqueeze(0));
        var copy = embeds.clone();
        using var state = model.NewState();
        model.Forward(embeds, state);
        Assert.True(embeds.equal(copy).all().item<bool>());
    }

    [Fact]
    public void Bf16_follows_fp32_within_bf16_rounding()
    {
        using var scope = torch.NewDisposeScope();
        var config = Config(16, 4, 2, null);
        using var fp32 = new MambaForCausalLM(config, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(fp32, seed: 11);
        using var bf16 = new MambaForCausalLM(config, ScalarType.BFloat16, torch.CPU);
        using (torch.no_grad())
        {
            foreach (var (name, p) in bf16.named_parameters())
            {
                p.copy_(fp32.get_parameter(name)!);
            }
        }

        long[] ids = [4, 8, 15, 16, 23, 42];
        using var s32 = fp32.NewState();
        using var s16 = bf16.NewState();
        var l32 = fp32.Forward(fp32.Embed(torch.tensor(ids).unsqueeze(0)), s32, allPositions: true);
        var l16 = bf16.Forward(bf16.Embed(torch.tensor(ids).unsqueeze(0)), s16, allPositions: true);
        Assert.Equal(ScalarType.Float32, s16.Layers[0].Ssm.dtype);                  // carried in float32, rounded when a step reads it
        Assert.Equal(ScalarType.Float32, l16.dtype);
        double relative = ((l16 - l32).norm() / l32.norm()).item<float>();
        Assert.InRange(relative, 1e-5, 3e-2);                                    // rounded, but only by bf16 rounding

        var step32 = fp32.Step(torch.tensor(new long[] { 7 }), s32);
        var step16 = bf16.Step(torch.tensor(new long[] { 7 }), s16);
        Assert.InRange(((step16 - step32).norm() / step32.norm()).item<float>(), 0, 3e-2);
    }

    private static void AssertSameState(MambaState expected, MambaState actual)
    {
        for (int i = 0; i < expected.Layers.Count; i++)
        {
            Golden.AssertClose(expected.Layers[i].Conv, actual.Layers[i].Conv, $"layer {i} conv state");
            Golden.AssertClose(expected.Layers[i].Ssm, actual.Layers[i].Ssm, $"layer {i} ssm state");
        }
    }
}
