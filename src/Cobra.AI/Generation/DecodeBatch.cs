using Cobra.AI.Modeling.Mamba;

namespace Cobra.AI.Generation;

/// <summary>
/// The decoding rows' recurrent states in one block of allocated rows, rows [0, <see cref="Count"/>) in use: a row
/// joins by copying its state into the next free row and leaves by moving the last row into its place, so the
/// bookkeeping of a step costs the rows that changed, not the batch. (The batch had been rebuilt by concatenating
/// every row's state whenever one joined or left: 60-126 ms a step at 16-56 rows and 8 layers while a burst of prompts
/// joined, a third to half of the step, and 8x that at the real 64 layers.)
/// The block grows by half when a join needs more rows and is reallocated to twice the rows in use once they fall to
/// a quarter of it, so a burst's memory is returned when it drains (a row is 26 MB of float32 state at the real size).
/// </summary>
internal sealed class DecodeBatch : IDisposable
{
    /// <summary>Fewest rows the block is allocated or shrunk to.</summary>
    private const int MinimumCapacity = 4;

    private MambaState? block;                                                   // [capacity, ...] per layer
    private MambaState? active;                                                  // views of rows [0, Count)
    private long tokenCount;                                                     // positions folded in: the most of any row's (as Stack kept it)

    /// <summary>Rows in use.</summary>
    public int Count { get; private set; }

    /// <summary>Rows allocated.</summary>
    public int Capacity => block is null ? 0 : (int)block.BatchSize;

    /// <summary>The rows in use, as one state a step updates in place; only while <see cref="Count"/> &gt; 0.</summary>
    public MambaState Active => active ?? throw new InvalidOperationException("The decode batch has no rows.");

    /// <summary>Appends every row of <paramref name="state"/> (rows [Count, Count + its batch size)); the caller keeps <paramref name="state"/>.</summary>
    public void Append(MambaState state)
    {
        int rows = (int)state.BatchSize;
        if (Count + rows > Capacity)
        {
            Reallocate(Math.Max(Count + rows, Math.Max(MinimumCapacity, Capacity + (Capacity / 2))), state);
        }

        block!.CopyRowsFrom(Count, state);
        tokenCount = Math.Max(CurrentTokenCount, state.TokenCount);
        SetCount(Count + rows);
    }

    /// <summary>Removes row <paramref name="row"/>: the last row moves into its place (the caller mirrors that order).</summary>
    public void RemoveAt(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Count);
        if (row != Count - 1)
        {
            block!.CopyRow(Count - 1, row);
        }

        tokenCount = CurrentTokenCount;
        SetCount(Count - 1);
        if (Count == 0)
        {
            Clear();
        }
        else if (Count <= Capacity / 4 && Capacity > MinimumCapacity)
        {
            Reallocate(Math.Max(MinimumCapacity, 2 * Count), block!);
        }
    }

    /// <summary>An independent copy of row <paramref name="row"/> (a finished choice's state for the conversation cache).</summary>
    public MambaState CopyOfRow(int row) => Active.Select([row]);

    /// <summary>Drops every row and frees the block.</summary>
    public void Clear()
    {
        active?.Dispose();
        active = null;
        block?.Dispose();
        block = null;
        Count = 0;
        tokenCount = 0;
    }

    /// <inheritdoc />
    public void Dispose() => Clear();

    /// <summary>A block of <paramref name="capacity"/> rows shaped like <paramref name="like"/>, holding the rows in use.</summary>
    private void Reallocate(int capacity, MambaState like)
    {
        var grown = MambaState.Allocate(like, capacity);
        if (Count > 0)
        {
            grown.CopyRowsFrom(0, Active);
        }

        tokenCount = CurrentTokenCount;
        active?.Dispose();
        active = null;
        block?.Dispose();
        block = grown;
        SetCount(Count);
    }

    /// <summary>The positions count as the steps on <see cref="Active"/> have advanced it.</summary>
    private long CurrentTokenCount => active?.TokenCount ?? tokenCount;

    /// <summary>Points <see cref="Active"/> at rows [0, <paramref name="count"/>), with <see cref="tokenCount"/> (the caller has brought it up to date).</summary>
    private void SetCount(int count)
    {
        active?.Dispose();
        active = count > 0 ? block!.View(0, count) : null;
        if (active is not null)
        {
            active.TokenCount = tokenCount;
        }

        Count = count;
    }
}
