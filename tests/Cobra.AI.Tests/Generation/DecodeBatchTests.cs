using Cobra.AI.Generation;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Generation;

/// <summary>The engine's decode batch: rows join by copy, leave by swapping with the last row, and steps update the block in place.</summary>
public sealed class DecodeBatchTests
{
    public DecodeBatchTests() => TorchRuntime.EnsureInitialized();

    private static MambaForCausalLM Model()
    {
        var model = new MambaForCausalLM(new MambaConfig { DModel = 16, NLayer = 2, VocabSize = 30 }, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, 5);
        return model;
    }

    /// <summary>A one-row state after a prompt of <paramref name="tokens"/>.</summary>
    private static MambaState Prefilled(MambaForCausalLM model, params long[] tokens)
    {
        var state = model.NewState();
        model.Forward(model.Embed(torch.tensor(tokens).unsqueeze(0)), state).Dispose();
        return state;
    }

    private static bool Same(MambaState a, int rowA, MambaState b, int rowB) => a.Layers.Zip(b.Layers).All(l =>
        l.First.Conv.narrow(0, rowA, 1).equal(l.Second.Conv.narrow(0, rowB, 1)).all().item<bool>()
        && l.First.Ssm.narrow(0, rowA, 1).equal(l.Second.Ssm.narrow(0, rowB, 1)).all().item<bool>());

    [Fact]
    public void Rows_join_by_copy_leave_by_swapping_with_the_last_and_steps_update_the_block_in_place()
    {
        using var scope = torch.NewDisposeScope();
        using var model = Model();
        var states = Enumerable.Range(0, 6).Select(i => Prefilled(model, 1 + i, 2, 3 + i)).ToArray();
        using var batch = new DecodeBatch();
        foreach (var state in states)
        {
            batch.Append(state);
        }

        Assert.Equal(6, batch.Count);
        Assert.InRange(batch.Capacity, 6, 9);                                    // grown by half, not doubled per join
        for (int i = 0; i < 6; i++)
        {
            Assert.True(Same(batch.Active, i, states[i], 0), $"row {i} after the joins");
        }

        // Removing row 1 moves row 5 into it; removing row 4 (the last now) moves nothing.
        batch.RemoveAt(1);
        batch.RemoveAt(4);
        Assert.Equal(4, batch.Count);
        int[] order = [0, 5, 2, 3];
        for (int i = 0; i < order.Length; i++)
        {
            Assert.True(Same(batch.Active, i, states[order[i]], 0), $"row {i} holds state {order[i]}");
        }

        // A batched step on the active rows updates the block: each row as its own state stepped alone.
        var tokens = torch.tensor(new long[] { 7, 8, 9, 10 });
        var batched = model.Step(tokens, batch.Active);
        for (int i = 0; i < order.Length; i++)
        {
            var alone = model.Step(tokens.narrow(0, i, 1), states[order[i]]);
            Golden.AssertClose(alone, batched.narrow(0, i, 1), $"row {i} step logits");
            Assert.True(Same(batch.Active, i, states[order[i]], 0) || Close(batch.Active, i, states[order[i]]), $"row {i} state after the step");
        }

        // The positions count is the most of any row's, advanced by the steps, and survives joins, leaves and growth.
        Assert.Equal(4, batch.Active.TokenCount);                                // 3 prompt positions + one step
        using var longer = Prefilled(model, 1, 2, 3, 4, 5, 6, 7);
        for (int i = 0; i < 6; i++)
        {
            batch.Append(longer);                                                // past the capacity: reallocated
        }

        Assert.Equal(7, batch.Active.TokenCount);
        batch.RemoveAt(0);
        Assert.Equal(7, batch.Active.TokenCount);
        while (batch.Count > 4)
        {
            batch.RemoveAt(batch.Count - 1);                                     // back to four rows: [longer, 5, 2, 3]
        }

        // A copy of a row is independent of the block.
        using var copy = batch.CopyOfRow(2);
        model.Step(tokens, batch.Active).Dispose();
        Assert.False(Same(copy, 0, batch.Active, 2));
        Assert.True(Same(copy, 0, states[2], 0) || Close(copy, 0, states[2]));

        foreach (var state in states)
        {
            state.Dispose();
        }
    }

    [Fact]
    public void The_block_shrinks_when_a_quarter_is_in_use_and_is_freed_when_empty()
    {
        using var scope = torch.NewDisposeScope();
        using var model = Model();
        using var state = Prefilled(model, 4, 5);
        using var batch = new DecodeBatch();
        for (int i = 0; i < 20; i++)
        {
            batch.Append(state);
        }

        int full = batch.Capacity;
        Assert.InRange(full, 20, 30);
        while (batch.Count > full / 4)
        {
            batch.RemoveAt(0);
        }

        Assert.True(batch.Capacity < full, $"capacity {batch.Capacity} of {full} with {batch.Count} rows in use");
        Assert.True(Same(batch.Active, batch.Count - 1, state, 0), "the rows survive the reallocation");
        while (batch.Count > 0)
        {
            batch.RemoveAt(batch.Count - 1);
        }

        Assert.Equal(0, batch.Capacity);
        Assert.Throws<InvalidOperationException>(() => batch.Active);
        Assert.Throws<ArgumentOutOfRangeException>(() => batch.RemoveAt(0));
    }

    private static bool Close(MambaState a, int rowA, MambaState b) => a.Layers.Zip(b.Layers).All(l =>
        l.First.Ssm.narrow(0, rowA, 1).allclose(l.Second.Ssm, 1e-6, 1e-7) && l.First.Conv.narrow(0, rowA, 1).allclose(l.Second.Conv, 1e-6, 1e-7));
}
