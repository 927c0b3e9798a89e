namespace Cobra.AI.Routing;

/// <summary>A bounded least-recently-used map from (image hash, question) to Cobra's description. Thread-safe.</summary>
internal sealed class DescriptionCache(int capacity)
{
    private readonly Dictionary<string, LinkedListNode<(string Key, string Description)>> map = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Key, string Description)> order = new();
    private readonly Lock gate = new();

    public static string Key(string imageHash, string question) => imageHash + "\n" + question;

    public bool TryGet(string key, out string description)
    {
        lock (gate)
        {
            if (map.TryGetValue(key, out var node))
            {
                order.Remove(node);
                order.AddFirst(node);
                description = node.Value.Description;
                return true;
            }
        }

        description = "";
        return false;
    }

    public void Add(string key, string description)
    {
        if (capacity == 0)
        {
            return;
        }

        lock (gate)
        {
            if (map.Remove(key, out var existing))
            {
                order.Remove(existing);
            }

            map[key] = order.AddFirst((key, description));
            while (map.Count > capacity)
            {
                map.Remove(order.Last!.Value.Key);
                order.RemoveLast();
            }
        }
    }
}
