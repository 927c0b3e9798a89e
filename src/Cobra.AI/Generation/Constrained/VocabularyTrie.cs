using System.Runtime.CompilerServices;
using System.Text;
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
        PlainMask = [];
        PlainByUnits = [];
        PlainUnitsPrefix = [0];
        NonPlain = this;
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

    /// <summary>
    /// By id: whether the token is plain string content (printable ASCII other than quote and backslash, and whole
    /// UTF-8 characters): inside an unbounded string such a token is always allowed, whatever the container.
    /// Empty on the trie of the other tokens.
    /// </summary>
    public bool[] PlainMask { get; private set; }

    /// <summary>
    /// Whether every byte that valid UTF-8 can hold (all but C0, C1, F5-FF) is an ordinary token of its own, so any
    /// completion can be spelled one byte per token (true for GPT-NeoX's byte-level BPE).
    /// </summary>
    public bool HasEveryByte { get; private set; }

    /// <summary>Plain string content tokens, by UTF-16 length (ascending).</summary>
    public int[] PlainByUnits { get; private set; }

    /// <summary>
    /// PlainUnitsPrefix[k]: how many of <see cref="PlainByUnits"/> are at most k UTF-16 units long; its last index
    /// is the longest plain token.
    /// </summary>
    public int[] PlainUnitsPrefix { get; private set; }

    /// <summary>The trie of the tokens that are not plain string content, for the fast path inside strings.</summary>
    public VocabularyTrie NonPlain { get; private set; }

    /// <summary>Number of nodes, root included.</summary>
    public int NodeCount => NodeByte.Length;

    /// <summary>The trie of a tokenizer, built on first use.</summary>
    public static VocabularyTrie For(CobraTokenizer tokenizer) => Cache.GetValue(tokenizer, Build);

    /// <summary>Builds the trie without the cache (the bench times it).</summary>
    internal static VocabularyTrie Build(CobraTokenizer tokenizer)
    {
        int vocabulary = tokenizer.VocabularySize;
        var bytes = new byte[vocabulary][];
        var all = new List<int>(vocabulary);
        var nonPlain = new List<int>();
        var plainMask = new bool[vocabulary];
        var plainUnits = new List<(int Units, int Id)>();
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
            all.Add(id);
            if (IsPlainStringContent(token))
            {
                plainMask[id] = true;
                plainUnits.Add((Encoding.UTF8.GetCharCount(token), id));
            }
            else
            {
                nonPlain.Add(id);
            }
        }

        VocabularyTrie full = Build(bytes, all);
        full.PlainMask = plainMask;
        var singles = new bool[256];
        foreach (int id in all)
        {
            if (bytes[id].Length == 1)
            {
                singles[bytes[id][0]] = true;
            }
        }

        full.HasEveryByte = Enumerable.Range(0, 256).All(b => singles[b] || b is 0xC0 or 0xC1 or >= 0xF5);
        plainUnits.Sort();
        full.PlainByUnits = plainUnits.Select(p => p.Id).ToArray();
        int longest = plainUnits.Count == 0 ? 0 : plainUnits[^1].Units;
        full.PlainUnitsPrefix = new int[longest + 1];
        foreach ((int units, _) in plainUnits)
        {
            full.PlainUnitsPrefix[units]++;
        }

        for (int k = 1; k <= longest; k++)
        {
            full.PlainUnitsPrefix[k] += full.PlainUnitsPrefix[k - 1];
        }

        full.NonPlain = Build(bytes, nonPlain);
        return full;
    }

    /// <summary>Printable ASCII other than quote and backslash, and whole, well-formed UTF-8 characters only.</summary>
    internal static bool IsPlainStringContent(ReadOnlySpan<byte> token)
    {
        int i = 0;
        while (i < token.Length)
        {
            byte b = token[i];
            if (b < 0x80)
            {
                if (b < 0x20 || b == (byte)'"' || b == (byte)'\\')
                {
                    return false;
                }

                i++;
                continue;
            }

            int length = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
            if (length == 0 || i + length > token.Length)
            {
                return false;
            }

            byte lo = b switch { 0xE0 => 0xA0, 0xF0 => 0x90, _ => 0x80 };
            byte hi = b switch { 0xED => 0x9F, 0xF4 => 0x8F, _ => 0xBF };
            if (token[i + 1] < lo || token[i + 1] > hi)
            {
                return false;
            }

            for (int k = 2; k < length; k++)
            {
                if (token[i + k] < 0x80 || token[i + k] > 0xBF)
                {
                    return false;
                }
            }

            i += length;
        }

        return true;
    }

    private static VocabularyTrie Build(byte[][] bytes, List<int> ordered)
    {
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

        return new VocabularyTrie(nodeByte.ToArray(), nodeDepth.ToArray(), subtreeEnd, tokenStart, tokenIds, Math.Max(maxDepth, 1), bytes);
    }
}
