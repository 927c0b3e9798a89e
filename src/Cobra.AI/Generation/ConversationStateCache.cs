using Cobra.AI.Modeling.Mamba;

namespace Cobra.AI.Generation;

/// <summary>
/// A bounded LRU of Mamba state snapshots keyed by (image, token prefix). A chat client re-sends the whole
/// history every turn; the longest cached prefix of the new prompt lets the engine prefill only the rest.
/// Mamba's state is constant-size (64 × 5120 × 20 values for the 3B model), so a snapshot is cheap. Used only
/// on the inference thread.
/// </summary>
internal sealed class ConversationStateCache : IDisposable
{
    private readonly int capacity;
    private readonly LinkedList<Entry> entries = new();                          // most recent first

    /// <summary>Keeps at most <paramref name="capacity"/> snapshots (0 disables caching).</summary>
    public ConversationStateCache(int capacity) => this.capacity = Math.Max(0, capacity);

    /// <summary>Snapshots held now.</summary>
    public int Count => entries.Count;

    /// <summary>
    /// A copy of the state after the longest cached strict prefix of <paramref name="tokens"/> for the same
    /// image, and that prefix's length; null when nothing matches.
    /// </summary>
    public (MambaState State, int Length)? Lookup(string? imageKey, IReadOnlyList<int> tokens)
    {
        LinkedListNode<Entry>? best = null;
        for (var node = entries.First; node is not null; node = node.Next)
        {
            var e = node.Value;
            if (e.ImageKey == imageKey && e.Tokens.Length < tokens.Count && (best is null || e.Tokens.Length > best.Value.Tokens.Length) && IsPrefix(e.Tokens, tokens))
            {
                best = node;
            }
        }

        if (best is null)
        {
            return null;
        }

        entries.Remove(best);
        entries.AddFirst(best);
        return (best.Value.State.Clone(), best.Value.Tokens.Length);
    }

    /// <summary>Stores a copy of <paramref name="state"/> as the state after <paramref name="tokens"/>.</summary>
    public void Store(string? imageKey, IReadOnlyList<int> tokens, MambaState state)
    {
        if (capacity == 0 || tokens.Count == 0)
        {
            return;
        }

        for (var node = entries.First; node is not null; node = node.Next)
        {
            if (node.Value.ImageKey == imageKey && node.Value.Tokens.AsSpan().SequenceEqual(tokens.ToArray()))
            {
                entries.Remove(node);
                node.Value.State.Dispose();
                break;
            }
        }

        entries.AddFirst(new Entry(imageKey, tokens.ToArray(), state.Clone()));
        while (entries.Count > capacity)
        {
            entries.Last!.Value.State.Dispose();
            entries.RemoveLast();
        }
    }

    private static bool IsPrefix(int[] prefix, IReadOnlyList<int> tokens)
    {
        for (int i = 0; i < prefix.Length; i++)
        {
            if (prefix[i] != tokens[i])
            {
                return false;
            }
        }

        return true;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var e in entries)
        {
            e.State.Dispose();
        }

        entries.Clear();
    }

    /// <summary>Tokens are the LLM positions after the image (the image occupies the positions before them).</summary>
    private sealed record Entry(string? ImageKey, int[] Tokens, MambaState State);
}
