namespace Cobra.AI.Generation.Constrained;

/// <summary>A small immutable byte trie (keys, literals); node 0 is the root.</summary>
internal sealed class ByteTrie
{
    public static readonly ByteTrie Empty = Build([], out _);

    private readonly int[] _childStart;
    private readonly byte[] _childByte;
    private readonly int[] _childNode;
    private readonly int[] _terminal;
    private readonly int[] _depth;
    private readonly int[] _toTerminal;

    private ByteTrie(int[] childStart, byte[] childByte, int[] childNode, int[] terminal, int[] depth)
    {
        _childStart = childStart;
        _childByte = childByte;
        _childNode = childNode;
        _terminal = terminal;
        _depth = depth;

        // Nodes are numbered parents first, so one backward pass gives each node its shortest way to a key's end.
        _toTerminal = new int[terminal.Length];
        for (int n = terminal.Length - 1; n >= 0; n--)
        {
            int best = terminal[n] >= 0 ? 0 : int.MaxValue / 4;
            for (int i = childStart[n]; i < childStart[n + 1]; i++)
            {
                best = Math.Min(best, 1 + _toTerminal[childNode[i]]);
            }

            _toTerminal[n] = best;
        }
    }

    /// <summary>Number of nodes.</summary>
    public int NodeCount => _terminal.Length;

    /// <summary>Builds the trie of distinct keys.</summary>
    /// <param name="keys">The keys.</param>
    /// <param name="owners">For each node, the indices of the keys that pass through or end at it.</param>
    /// <returns>The trie.</returns>
    public static ByteTrie Build(IReadOnlyList<byte[]> keys, out int[][] owners)
    {
        var children = new List<SortedDictionary<byte, int>> { new() };
        var terminal = new List<int> { -1 };
        var depth = new List<int> { 0 };
        var ownerLists = new List<List<int>> { new() };
        for (int k = 0; k < keys.Count; k++)
        {
            int node = 0;
            ownerLists[0].Add(k);
            foreach (byte b in keys[k])
            {
                if (!children[node].TryGetValue(b, out int next))
                {
                    next = children.Count;
                    children.Add(new SortedDictionary<byte, int>());
                    terminal.Add(-1);
                    depth.Add(depth[node] + 1);
                    ownerLists.Add([]);
                    children[node][b] = next;
                }

                node = next;
                ownerLists[node].Add(k);
            }

            terminal[node] = k;
        }

        var childStart = new int[children.Count + 1];
        var childByte = new List<byte>();
        var childNode = new List<int>();
        for (int n = 0; n < children.Count; n++)
        {
            childStart[n] = childByte.Count;
            foreach (KeyValuePair<byte, int> pair in children[n])
            {
                childByte.Add(pair.Key);
                childNode.Add(pair.Value);
            }
        }

        childStart[children.Count] = childByte.Count;
        owners = ownerLists.Select(l => l.ToArray()).ToArray();
        return new ByteTrie(childStart, childByte.ToArray(), childNode.ToArray(), terminal.ToArray(), depth.ToArray());
    }

    /// <summary>The child of a node on a byte, or -1.</summary>
    public int Child(int node, byte b)
    {
        for (int i = _childStart[node], end = _childStart[node + 1]; i < end; i++)
        {
            if (_childByte[i] == b)
            {
                return _childNode[i];
            }
        }

        return -1;
    }

    /// <summary>Whether a key ends at the node.</summary>
    public bool IsTerminal(int node) => _terminal[node] >= 0;

    /// <summary>The index of the key that ends at the node, or -1.</summary>
    public int TerminalKey(int node) => _terminal[node];

    /// <summary>Bytes from the root to the node.</summary>
    public int Depth(int node) => _depth[node];

    /// <summary>Fewest bytes from the node to the end of a key.</summary>
    public int ToTerminal(int node) => _toTerminal[node];

    /// <summary>Whether the node has children.</summary>
    public bool HasChildren(int node) => _childStart[node + 1] > _childStart[node];

    /// <summary>The first bytes of all keys.</summary>
    public IEnumerable<byte> RootBytes()
    {
        for (int i = _childStart[0]; i < _childStart[1]; i++)
        {
            yield return _childByte[i];
        }
    }
}
