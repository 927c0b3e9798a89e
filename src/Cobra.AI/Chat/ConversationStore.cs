using Microsoft.Extensions.AI;

namespace Cobra.AI.Chat;

/// <summary>
/// The record of each conversation a client answered, for <see cref="ChatOptions.ConversationId"/>: its
/// messages as a caller would re-send them (the image content included). A continued call prepends them, so
/// the engine sees exactly the full-history request and its state snapshots make it cheap; an evicted snapshot
/// is recomputed from the record, so only a record past its retention is unknown. Bounded in conversations and
/// in bytes (images count by their encoded size), least recently used first out. Thread-safe.
/// </summary>
internal sealed class ConversationStore(int capacity, long capacityBytes)
{
    private readonly Dictionary<string, LinkedListNode<Entry>> byId = new(StringComparer.Ordinal);
    private readonly LinkedList<Entry> order = new();                            // most recent first
    private long bytes;

    /// <summary>The stored history, or throws <see cref="CobraConversationNotFoundException"/>.</summary>
    public IReadOnlyList<ChatMessage> Get(string id)
    {
        lock (byId)
        {
            if (!byId.TryGetValue(id, out var node))
            {
                throw new CobraConversationNotFoundException(id);
            }

            order.Remove(node);
            order.AddFirst(node);
            return node.Value.Messages;
        }
    }

    /// <summary>Stores (or replaces) the history of <paramref name="id"/>.</summary>
    public void Put(string id, IReadOnlyList<ChatMessage> messages)
    {
        long size = messages.Sum(SizeOf);
        lock (byId)
        {
            if (byId.Remove(id, out var old))
            {
                order.Remove(old);
                bytes -= old.Value.Bytes;
            }

            if (capacity == 0 || size > capacityBytes)
            {
                return;
            }

            byId[id] = order.AddFirst(new Entry(id, messages, size));
            bytes += size;
            while (order.Count > capacity || bytes > capacityBytes)
            {
                var last = order.Last!;
                order.RemoveLast();
                byId.Remove(last.Value.Id);
                bytes -= last.Value.Bytes;
            }
        }
    }

    private static long SizeOf(ChatMessage message) =>
        64 + message.Contents.Sum(c => c switch
        {
            TextContent t => 2L * t.Text.Length,
            DataContent d => d.Data.Length,
            UriContent u => 2L * u.Uri.OriginalString.Length,
            _ => 64,
        });

    private sealed record Entry(string Id, IReadOnlyList<ChatMessage> Messages, long Bytes);
}
