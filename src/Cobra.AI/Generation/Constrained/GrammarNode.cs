namespace Cobra.AI.Generation.Constrained;

/// <summary>Kinds of <see cref="GrammarNode"/>; the matcher switches on this rather than on types, for speed.</summary>
internal enum GrammarKind : byte
{
    /// <summary>Any JSON value (within the nesting bound).</summary>
    Any,

    /// <summary>Matches nothing (a <c>false</c> schema).</summary>
    Never,

    /// <summary>An object.</summary>
    Object,

    /// <summary>An array.</summary>
    Array,

    /// <summary>A string.</summary>
    String,

    /// <summary>A number or an integer.</summary>
    Number,

    /// <summary>One of a set of exact JSON texts (enum, const, true/false/null).</summary>
    Literal,

    /// <summary>One of several alternatives that start with different bytes.</summary>
    Union,

    /// <summary>A string of a fixed-shape format (uuid, date, date-time).</summary>
    Format,

    /// <summary>A <c>$ref</c>; only while compiling.</summary>
    Ref,
}

/// <summary>A node of a compiled JSON grammar; the graph may be cyclic (recursive <c>$ref</c>).</summary>
internal abstract class GrammarNode
{
    /// <summary>"Infinite" <see cref="MinDepth"/>: the node admits no value within the nesting bound.</summary>
    public const int Unreachable = int.MaxValue / 4;

    protected GrammarNode(GrammarKind kind, string path)
    {
        Kind = kind;
        Path = path;
    }

    /// <summary>What the node is.</summary>
    public GrammarKind Kind { get; }

    /// <summary>JSON pointer of the schema the node came from, for error messages.</summary>
    public string Path { get; }

    /// <summary>
    /// Fewest nested containers (objects/arrays, counting its own) a value of this node needs; the matcher only
    /// starts values that fit under <see cref="JsonGrammar.MaxNestingDepth"/>, so a started value can always end.
    /// </summary>
    public int MinDepth { get; set; } = Unreachable;

    /// <summary>Length in bytes of the shortest value of this node in the compact form (for the token budget).</summary>
    public int MinBytes { get; set; } = Unreachable;
}

/// <summary>Any JSON value; containers only while the nesting bound allows.</summary>
internal sealed class AnyNode : GrammarNode
{
    public static readonly AnyNode Instance = new();

    private AnyNode()
        : base(GrammarKind.Any, "#")
    {
        MinDepth = 0;
        MinBytes = 1;
    }
}

/// <summary>Matches nothing.</summary>
internal sealed class NeverNode : GrammarNode
{
    public NeverNode(string path)
        : base(GrammarKind.Never, path)
    {
    }
}

/// <summary>A declared property of an <see cref="ObjectNode"/>.</summary>
internal sealed class PropertyRule(string name, byte[] keyBytes, GrammarNode node, bool required)
{
    /// <summary>Property name.</summary>
    public string Name { get; } = name;

    /// <summary>The key as emitted after the opening quote: JSON-escaped name and the closing quote.</summary>
    public byte[] KeyBytes { get; } = keyBytes;

    /// <summary>Schema of the value.</summary>
    public GrammarNode Node { get; set; } = node;

    /// <summary>Whether the property must appear.</summary>
    public bool Required { get; } = required;
}

/// <summary>
/// An object: either declared properties, written in declared order with optional ones skippable, or (no declared
/// properties) any keys whose values match <see cref="MapValue"/>; neither means only <c>{}</c>.
/// </summary>
internal sealed class ObjectNode : GrammarNode
{
    public static readonly ObjectNode AnyObject = CreateAnyObject();

    public ObjectNode(string path)
        : base(GrammarKind.Object, path)
    {
    }

    /// <summary>Declared properties, in order.</summary>
    public PropertyRule[] Properties { get; set; } = [];

    /// <summary>Value schema for free keys (dictionaries, free objects); only when there are no declared properties.</summary>
    public GrammarNode? MapValue { get; set; }

    /// <summary>For each i, the index of the first required property at or after i (Properties.Length when none).</summary>
    public int[] NextRequired { get; private set; } = [0];

    /// <summary>
    /// For each i: bytes the required properties from i on take after a member, each with its comma
    /// (<c>,"key":value</c>), not counting the closing brace.
    /// </summary>
    public int[] RequiredSuffix { get; private set; } = [0];

    /// <summary>Trie of the declared keys.</summary>
    public ByteTrie Keys { get; private set; } = ByteTrie.Empty;

    /// <summary>For each key-trie node, the property indices whose key passes through it.</summary>
    public int[][] KeyOwners { get; private set; } = [[]];

    /// <summary>Builds the lookup tables once the properties are known.</summary>
    public void Seal()
    {
        int n = Properties.Length;
        NextRequired = new int[n + 1];
        NextRequired[n] = n;
        for (int i = n - 1; i >= 0; i--)
        {
            NextRequired[i] = Properties[i].Required ? i : NextRequired[i + 1];
        }

        Keys = ByteTrie.Build(Properties.Select(p => p.KeyBytes).ToList(), out int[][] owners);
        KeyOwners = owners;
    }

    /// <summary>Bytes of one member, without its comma: <c>"key":value</c>.</summary>
    public int MemberBytes(int j) => 2 + Properties[j].KeyBytes.Length + Properties[j].Node.MinBytes;

    /// <summary>Computes <see cref="RequiredSuffix"/> once every node's <see cref="GrammarNode.MinBytes"/> is known.</summary>
    public void ComputeCosts()
    {
        int n = Properties.Length;
        var suffix = new int[n + 1];
        for (int i = n - 1; i >= 0; i--)
        {
            suffix[i] = Math.Min(suffix[i + 1] + (Properties[i].Required ? 1 + MemberBytes(i) : 0), Unreachable);
        }

        RequiredSuffix = suffix;
    }

    private static ObjectNode CreateAnyObject()
    {
        var node = new ObjectNode("#") { MapValue = AnyNode.Instance, MinDepth = 1, MinBytes = 2 };
        node.Seal();
        return node;
    }
}

/// <summary>An array of <see cref="Items"/> with <see cref="Min"/>..<see cref="Max"/> elements.</summary>
internal sealed class ArrayNode : GrammarNode
{
    public static readonly ArrayNode AnyArray = new("#") { Items = AnyNode.Instance, MinDepth = 1, MinBytes = 2 };

    public ArrayNode(string path)
        : base(GrammarKind.Array, path)
    {
    }

    /// <summary>Element schema.</summary>
    public GrammarNode Items { get; set; } = AnyNode.Instance;

    /// <summary>minItems.</summary>
    public int Min { get; set; }

    /// <summary>maxItems (int.MaxValue when unbounded).</summary>
    public int Max { get; set; } = int.MaxValue;
}

/// <summary>A string with a length range; lengths are counted conservatively (see the matcher).</summary>
internal sealed class StringNode : GrammarNode
{
    public static readonly StringNode Unbounded = new("#", 0, int.MaxValue);

    public StringNode(string path, int min, int max)
        : base(GrammarKind.String, path)
    {
        Min = min;
        Max = max;
        MinDepth = 0;
        MinBytes = (int)Math.Min(2L + min, Unreachable);
    }

    /// <summary>minLength.</summary>
    public int Min { get; }

    /// <summary>maxLength (int.MaxValue when unbounded).</summary>
    public int Max { get; }
}

/// <summary>A JSON number, or an integer.</summary>
internal sealed class NumberNode : GrammarNode
{
    public static readonly NumberNode AnyNumber = new("#", integer: false);

    public NumberNode(string path, bool integer)
        : base(GrammarKind.Number, path)
    {
        Integer = integer;
        MinDepth = 0;
        MinBytes = 1;
    }

    /// <summary>Integer only: no fraction.</summary>
    public bool Integer { get; }
}

/// <summary>One of a set of exact JSON texts.</summary>
internal sealed class LiteralNode : GrammarNode
{
    public static readonly LiteralNode TrueFalseNull = Create("#", ["true"u8.ToArray(), "false"u8.ToArray(), "null"u8.ToArray()]);

    public LiteralNode(string path, List<byte[]> texts)
        : base(GrammarKind.Literal, path)
    {
        Texts = texts;
        MinDepth = 0;
        MinBytes = texts.Count == 0 ? Unreachable : texts.Min(t => t.Length);
    }

    /// <summary>The texts (distinct).</summary>
    public List<byte[]> Texts { get; }

    /// <summary>Trie of <see cref="Texts"/>.</summary>
    public ByteTrie Trie { get; private set; } = ByteTrie.Empty;

    public static LiteralNode Create(string path, List<byte[]> texts)
    {
        var node = new LiteralNode(path, texts);
        node.Seal();
        return node;
    }

    /// <summary>Builds the trie once the texts are final.</summary>
    public void Seal() => Trie = ByteTrie.Build(Texts, out _);
}

/// <summary>How a <see cref="UnionNode"/> arose; oneOf may not overlap at all.</summary>
internal enum UnionKind : byte
{
    /// <summary>A type list such as ["object","null"].</summary>
    Type,

    /// <summary>anyOf.</summary>
    AnyOf,

    /// <summary>oneOf.</summary>
    OneOf,
}

/// <summary>Alternatives told apart by their first byte.</summary>
internal sealed class UnionNode : GrammarNode
{
    public UnionNode(string path, UnionKind unionKind, string keyword)
        : base(GrammarKind.Union, path)
    {
        UnionKind = unionKind;
        Keyword = keyword;
    }

    /// <summary>Where it came from.</summary>
    public UnionKind UnionKind { get; }

    /// <summary>The keyword, for messages ("type", "anyOf", "oneOf").</summary>
    public string Keyword { get; }

    /// <summary>Alternatives (while compiling, possibly refs or nested unions; after sealing, neither).</summary>
    public List<GrammarNode> Alternatives { get; } = [];

    /// <summary>By first byte: index into <see cref="Alternatives"/>, or -1.</summary>
    public sbyte[] ByFirstByte { get; } = new sbyte[256];

    /// <summary>Whether the union was flattened and its table built.</summary>
    public bool Sealed { get; set; }
}

/// <summary>A <c>$ref</c>, replaced by its target after compiling.</summary>
internal sealed class RefNode(string path, string target) : GrammarNode(GrammarKind.Ref, path)
{
    /// <summary>Canonical pointer of the target.</summary>
    public string Target { get; } = target;

    /// <summary>Compiled target (possibly another ref).</summary>
    public GrammarNode? Resolved { get; set; }
}
