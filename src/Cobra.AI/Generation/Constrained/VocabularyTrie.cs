using System.Runtime.CompilerServices;
using Cobra.AI.Text;

namespace Cobra.AI.Generation.Constrained;

/// <summary>
/// The byte trie of a tokenizer's ordinary tokens, in preorder so that a mask is one linear pass: each node's
/// subtree is the range up to <see cref="SubtreeEnd"/>, so a dead prefix skips all tokens that extend it.
/// Special tokens and empty tokens are left out. Built once per tokenizer and shared (immutable).
/// </summary>
internal sealed class VocabularyTrie
{
    private static readonly ConditionalWeakTable<CobraTokenizer, VocabularyTrie> Cache = new();

    private VocabularyTrie(byte[] nodeByte, int[] nodeDepth, int[] subtreeEnd, int[] tokenStart, int[] tokenIds, int maxDepth, byte[][] tokenBytes)
    {
        NodeByte = nodeByte;
        NodeDepth = nodeDepth;
        SubtreeEnd = subtreeEnd;
        TokenStart = tokenStart;
        TokenIds = tokenIds;
        MaxDepth = maxDepth;
        TokenBytes = tokenBytes;
    }

    /// <summary>By preorder node (0 is the root): the byte on the edge into it.</summary>
    public byte[] NodeByte { get; }

    /// <summary>By node: its depth (bytes from the root).</summary>
    public int[] NodeDepth { get; }

    /// <summary>By node: one past the last node of its subtree.</summary>
    public int[] SubtreeEnd { get; }

    /// <summary>By node: start of its token ids in <see cref="TokenIds"/> (length NodeCount + 1).</summary>
    public int[] TokenStart { get; }

    /// <summary>Ids of the tokens whose bytes end at each node.</summary>
    public int[] TokenIds { get; }

    /// <summary>Longest token, in bytes.</summary>
    public int MaxDepth { get; }

    /// <summary>By id: the token's bytes, or null for special tokens (never allowed as text).</summary>
    public byte[][] TokenBytes { get; }

    /// <summary>Number of nodes, root included.</summary>
    public int NodeCount => NodeByte.Length;

    /// <summary>The trie of a tokenizer, built on first use.</summary>
    public static VocabularyTrie For(CobraTokenizer tokenizer) => Cache.GetValue(tokenizer, Build);

    private static VocabularyTrie Build(CobraTokenizer tokenizer)
    {
        int vocabulary = tokenizer.VocabularySize;
        var bytes = new byte[vocabulary][];
        var ordered = new List<int>(vocabulary);
        for (int id = 0; id < vocabulary; id++)
        {
            if (tokenizer.IsSpecial(id))
            {
                continue;
            }

            byte[] token = tokenizer.GetTokenBytes(id);
            if (token.Length == 0)
            {
                continue;
            }

            bytes[id] = token;
            ordered.Add(id);
        }

        // Sorted by bytes, tokens sharing a prefix are adjacent: the preorder trie falls out of one scan.
        ordered.Sort((a, b) =>
        {
            int c = bytes[a].AsSpan().SequenceCompareTo(bytes[b]);
            return c != 0 ? c : a.CompareTo(b);
        });

        var nodeByte = new List<byte> { 0 };
        var nodeDepth = new List<int> { 0 };
        var tokenNode = new List<(int Node, int Id)>();
        var path = new List<int> { 0 }; // node index at each depth along the current token
        byte[] previous = [];
        int maxDepth = 0;
        foreach (int id in ordered)
        {
            byte[] token = bytes[id];
            int common = 0;
            while (common < previous.Length && common < token.Length && previous[common] == token[common])
            {
                common++;
            }

            path.RemoveRange(common + 1, path.Count - common - 1);
            for (int d = common; d < token.Length; d++)
            {
                path.Add(nodeByte.Count);
                nodeByte.Add(token[d]);
                nodeDepth.Add(d + 1);
            }

            tokenNode.Add((path[token.Length], id));
            previous = token;
            maxDepth = Math.Max(maxDepth, token.Length);
        }

        int count = nodeByte.Count;
        var subtreeEnd = new int[count];
        var open = new Stack<int>();
        for (int n = 0; n < count; n++)
        {
            while (open.Count > 0 && nodeDepth[open.Peek()] >= nodeDepth[n])
            {
                subtreeEnd[open.Pop()] = n;
            }

            open.Push(n);
        }

        while (open.Count > 0)
        {
            subtreeEnd[open.Pop()] = count;
        }

        var tokenStart = new int[count + 1];
        foreach ((int node, _) in tokenNode)
        {
            tokenStart[node + 1]++;
        }

        for (int n = 0; n < count; n++)
        {
            tokenStart[n + 1] += tokenStart[n];
        }

        var tokenIds = new int[tokenNode.Count];
        var fill = (int[])tokenStart.Clone();
        foreach ((int node, int id) in tokenNode)
        {
            tokenIds[fill[node]++] = id;
        }

        return new VocabularyTrie(nodeByte.ToArray(), nodeDepth.ToArray(), subtreeEnd, tokenStart, tokenIds, maxDepth, bytes);
    }
}
