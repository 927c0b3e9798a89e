using Cobra.AI.Modeling.Mamba;

namespace Cobra.AI.Generation;

/// <summary>
/// A bounded LRU of Mamba state snapshots keyed by (image, token prefix), bounded both in entries and in bytes.
/// A chat client re-sends the whole history every turn; the longest cached prefix of the new prompt lets the
/// engine prefill only the rest. Snapshots are taken at the end of each turn and after an image plus the prompt
/// prefix every first turn shares, so a new conversation about a seen image skips the towers too. Mamba's
/// state is constant-size (64 × 5120 × (16 + 4) values for the 3B model), so a snapshot is cheap. Used only on
/// the inference thread; the counters may be read from any thread.
/// </summary>
internal sealed class ConversationStateCache : IDisposable
{
    private readonly int capacity;
    private readonly long capacityBytes;
    private readonly LinkedList<Entry> entries = new();                          // most recent first
    private long bytes;
    private long hits;
    private long misses;

    /// <summary>Keeps at most <paramref name="capacity"/> snapshots and <paramref name="capacityBytes"/> bytes of them (0 disables caching).</summary>
    public ConversationStateCache(int capacity, long capacityBytes)
    {
        this.capacity = Math.Max(0, capacity);
        this.capacityBytes = Math.Max(0, capacityBytes);
    }

    /// <summary>Snapshots held now.</summary>
    public int Count => Volatile.Read(ref count);

    /// <summary>Bytes of tensor data held now.</summary>
    public long Bytes => Interlocked.Read(ref bytes);

    /// <summary>Lookups that found a prefix.</summary>
    public long Hits => Interlocked.Read(ref hits);

    /// <summary>Lookups that found nothing.</summary>
    public long Misses => Interlocked.Read(ref misses);

    private int count;

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
            Interlocked.Increment(ref misses);
            return null;
        }

        Interlocked.Increment(ref hits);
        entries.Remove(best);
        entries.AddFirst(best);
        return (best.Value.State.Clone(), best.Value.Tokens.Length);
    }

    /// <summary>Stores a copy of <paramref name="state"/> (batch 1) as the state after <paramref name="tokens"/>.</summary>
    public void Store(string? imageKey, IReadOnlyList<int> tokens, MambaState state)
    {
        long size = state.ByteSize;
        if (capacity == 0 || tokens.Count == 0 || size > capacityBytes)
        {
            return;
        }

        var key = tokens.ToArray();
        for (var node = entries.First; node is not null; node = node.Next)
        {
            if (node.Value.ImageKey == imageKey && node.Value.Tokens.AsSpan().SequenceEqual(key))
            {
                Remove(node);
                break;
            }
        }

        entries.AddFirst(new Entry(imageKey, key, state.Clone(), size));
        Interlocked.Add(ref bytes, size);
        while (entries.Count > capacity || Interlocked.Read(ref bytes) > capacityBytes)
        {
            Remove(entries.Last!);
        }

        Volatile.Write(ref count, entries.Count);
    }

    private void Remove(LinkedListNode<Entry> node)
    {
        entries.Remove(node);
        node.Value.State.Dispose();
        Interlocked.Add(ref bytes, -node.Value.Bytes);
        Volatile.Write(ref count, entries.Count);
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
        while (entries.First is { } node)
        {
            Remove(node);
        }
    }

    /// <summary>Tokens are the LLM positions after the image (the image occupies the positions before them).</summary>
    private sealed record Entry(string? ImageKey, int[] Tokens, MambaState State, long Bytes);
}
