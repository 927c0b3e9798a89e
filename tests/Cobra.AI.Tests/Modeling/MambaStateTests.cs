using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

public sealed class MambaStateTests
{
    public MambaStateTests() => TorchRuntime.EnsureInitialized();

    [Fact]
    public void Clone_is_independent_and_stack_split_round_trips()
    {
        using var scope = torch.NewDisposeScope();
        using var model = new MambaForCausalLM(new MambaConfig { DModel = 16, NLayer = 2, VocabSize = 30 }, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, 4);
        using var a = model.NewState();
        model.Forward(model.Embed(torch.tensor(new long[] { 1, 2, 3 }).unsqueeze(0)), a);
        using var snapshot = a.Clone();
        model.Step(torch.tensor(new long[] { 4 }), a);
        Assert.False(a.Layers[0].Ssm.equal(snapshot.Layers[0].Ssm).all().item<bool>());
        Assert.Equal(3, snapshot.TokenCount);

        using var b = model.NewState();
        model.Forward(model.Embed(torch.tensor(new long[] { 9 }).unsqueeze(0)), b);
        using var batch = MambaState.Stack([snapshot, b]);
        Assert.Equal(2, batch.BatchSize);
        var parts = batch.Split();
        try
        {
            Assert.True(parts[0].Layers[1].Conv.equal(snapshot.Layers[1].Conv).all().item<bool>());
            Assert.True(parts[1].Layers[1].Ssm.equal(b.Layers[1].Ssm).all().item<bool>());
        }
        finally
        {
            foreach (var p in parts)
            {
                p.Dispose();
            }
        }
    }

    [Fact]
    public void Batched_steps_equal_single_sequence_steps()
    {
        using var scope = torch.NewDisposeScope();
        using var model = new MambaForCausalLM(new MambaConfig { DModel = 16, NLayer = 2, VocabSize = 30 }, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, 8);
        using var s1 = model.NewState();
        using var s2 = model.NewState();
        model.Forward(model.Embed(torch.tensor(new long[] { 1, 2, 3 }).unsqueeze(0)), s1);
        model.Forward(model.Embed(torch.tensor(new long[] { 7, 7 }).unsqueeze(0)), s2);
        using var batch = MambaState.Stack([s1, s2]);
        var batched = model.Step(torch.tensor(new long[] { 5, 6 }), batch);
        var single1 = model.Step(torch.tensor(new long[] { 5 }), s1);
        var single2 = model.Step(torch.tensor(new long[] { 6 }), s2);
        Golden.AssertClose(torch.cat([single1, single2], 0), batched, "batched step logits");
    }
}
