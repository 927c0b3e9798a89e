using System.Runtime.CompilerServices;

namespace Cobra.AI.Generation.Constrained;

/// <summary>Which container is on top of the matcher's stack.</summary>
internal enum ContainerKind : byte
{
    Root,
    Object,
    Array,
}

/// <summary>Where the top container is.</summary>
internal enum ContainerPhase : byte
{
    /// <summary>Root: the value has not started.</summary>
    RootValue,

    /// <summary>Root: the value is complete (or a trailing number/literal scalar is running).</summary>
    Done,

    /// <summary>Object/array: just after the opening bracket.</summary>
    Open,

    /// <summary>Object/array: after a member or element.</summary>
    AfterValue,

    /// <summary>Object: after a comma, expecting the key's quote.</summary>
    KeyStart,

    /// <summary>Object: after a key, expecting the colon.</summary>
    Colon,

    /// <summary>Object/array: expecting a value.</summary>
    Value,
}

/// <summary>The scalar being matched, if any (scalars never nest, so they live beside the top container).</summary>
internal enum ScalarKind : byte
{
    None,
    String,
    FreeKey,
    DeclaredKey,
    Number,
    Literal,
    Format,
}

/// <summary>A container below the top one; immutable and shared between states.</summary>
internal sealed class ContainerFrame(ContainerFrame? below, ContainerKind kind, GrammarNode? node, ContainerPhase phase, int index, int member, bool emitted, int depth)
{
    public ContainerFrame? Below { get; } = below;

    public ContainerKind Kind { get; } = kind;

    public GrammarNode? Node { get; } = node;

    public ContainerPhase Phase { get; } = phase;

    public int Index { get; } = index;

    public int Member { get; } = member;

    public bool Emitted { get; } = emitted;

    public int Depth { get; } = depth;
}

/// <summary>
/// The state of a byte-level pushdown matcher for a <see cref="JsonGrammar"/>: the top container inline, the rest
/// as an immutable chain, and the running scalar. A plain value type, so the mask walk copies it per trie node.
/// </summary>
/// <remarks>
/// Output form: no whitespace outside strings; object members in declared order. Strings: raw UTF-8 (validated:
/// no overlong forms, no surrogates), the escapes \" \\ \/ \b \f \n \r \t and \uXXXX other than surrogates.
/// maxLength counts UTF-16 units (at least the code points or text elements a validator may count); below
/// minLength only printable ASCII is allowed, so no validator's count can fall short. A value (container or
/// optional member or element) is only started when it can end within <see cref="JsonGrammar.MaxNestingDepth"/>,
/// so every reachable state can be completed.
/// </remarks>
internal struct JsonMatchState
{
    public ContainerFrame? Below;
    public GrammarNode? Node;
    public GrammarNode? ScalarNode;
    public int Index;
    public int Member;
    public int Depth;
    public int S0;
    public int S1;
    public int S2;
    public ContainerKind Kind;
    public ContainerPhase Phase;
    public ScalarKind Scalar;
    public bool Emitted;
}

/// <summary>Steps <see cref="JsonMatchState"/> byte by byte over a grammar.</summary>
internal static class JsonMatcher
{
    // String sub-states (S1).
    private const int StrNormal = 0;
    private const int StrEscape = 1;
    private const int StrHex0 = 2; // 2..5: hex digits of \u read so far + 2
    private const int StrUtf8 = 6;

    // Number phases (S0).
    private const int NumStart = 0;
    private const int NumMinus = 1;
    private const int NumZero = 2;
    private const int NumInt = 3;
    private const int NumDot = 4;
    private const int NumFrac = 5;

    private const int Max = JsonGrammar.MaxNestingDepth;

    /// <summary>The state before any byte.</summary>
    public static JsonMatchState Start(JsonGrammar grammar) => new()
    {
        Kind = ContainerKind.Root,
        Node = grammar.Root,
        Phase = ContainerPhase.RootValue,
    };

    /// <summary>Whether the text so far is a complete value (the end of the answer may come now).</summary>
    public static bool IsAccepting(in JsonMatchState s)
    {
        if (s.Kind != ContainerKind.Root || s.Phase != ContainerPhase.Done)
        {
            return false;
        }

        return s.Scalar switch
        {
            ScalarKind.None => true,
            ScalarKind.Number => s.S0 is NumZero or NumInt or NumFrac,
            ScalarKind.Literal => Unsafe.As<LiteralNode>(s.ScalarNode!).Trie.IsTerminal(s.S0),
            _ => false,
        };
    }

    /// <summary>Whether any byte can follow.</summary>
    public static bool CanContinue(in JsonMatchState s)
    {
        for (int b = 0; b < 256; b++)
        {
            JsonMatchState copy = s;
            if (Step(ref copy, (byte)b))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// How many UTF-16 units of plain string content (see <see cref="VocabularyTrie.PlainMask"/>) can come next:
    /// inside a string, between characters, at or past minLength; -1 when not in such a place.
    /// </summary>
    public static int PlainStringRoom(in JsonMatchState s) =>
        s.Scalar is ScalarKind.String or ScalarKind.FreeKey
        && s.S1 == StrNormal
        && Unsafe.As<StringNode>(s.ScalarNode!) is StringNode node
        && s.S0 >= node.Min
            ? node.Max - s.S0
            : -1;

    /// <summary>
    /// Bytes of the shortest way to complete the value from this state, in the compact form (the token budget:
    /// every byte is also a token of its own). Not below the truth; values past <see cref="GrammarNode.Unreachable"/> mean none.
    /// </summary>
    public static long MinCompletion(in JsonMatchState s)
    {
        long total;
        switch (s.Scalar)
        {
            case ScalarKind.FreeKey:
                // Key, colon, the shortest value, and the object's close (dictionaries have no required members).
                total = StringRest(in s) + 1 + Unsafe.As<ObjectNode>(s.Node!).MapValue!.MinBytes + 1;
                return total + BelowCost(s.Below);
            case ScalarKind.DeclaredKey:
                return DeclaredKeyRest(in s) + BelowCost(s.Below);
            case ScalarKind.String:
                total = StringRest(in s);
                break;
            case ScalarKind.Number:
                total = s.S0 is NumMinus or NumDot ? 1 : 0;
                break;
            case ScalarKind.Literal:
                total = Unsafe.As<LiteralNode>(s.ScalarNode!).Trie.ToTerminal(s.S0);
                break;
            case ScalarKind.Format:
                total = Unsafe.As<FormatNode>(s.ScalarNode!).ToFinal(s.S0);
                break;
            default:
                total = 0;
                break;
        }

        return total + ContainerCost(s.Kind, s.Node!, s.Phase, s.Index, s.Member, s.Depth) + BelowCost(s.Below);
    }

    private static long BelowCost(ContainerFrame? frame)
    {
        long total = 0;
        for (; frame is not null; frame = frame.Below)
        {
            total += ContainerCost(frame.Kind, frame.Node!, frame.Phase, frame.Index, frame.Member, frame.Depth);
        }

        return total;
    }

    private static long StringRest(in JsonMatchState s)
    {
        int deficit = Math.Max(0, Unsafe.As<StringNode>(s.ScalarNode!).Min - s.S0);
        int pending = s.S1 switch
        {
            StrNormal => 0,
            StrEscape => 1,
            StrUtf8 => s.S2 >> 16,
            _ => 4 - (s.S1 - StrHex0),
        };
        return pending + deficit + 1;
    }

    private static long DeclaredKeyRest(in JsonMatchState s)
    {
        ObjectNode o = Unsafe.As<ObjectNode>(s.Node!);
        int keyed = o.Keys.Depth(s.S0);
        int last = o.NextRequired[s.Index];
        long best = GrammarNode.Unreachable;
        foreach (int j in o.KeyOwners[s.S0])
        {
            if (j >= s.Index && j <= last && s.Depth + o.Properties[j].Node.MinDepth <= Max)
            {
                best = Math.Min(best, o.Properties[j].KeyBytes.Length - keyed + 1L + o.Properties[j].Node.MinBytes + o.RequiredSuffix[j + 1]);
            }
        }

        return best + 1;
    }

    private static long ContainerCost(ContainerKind kind, GrammarNode node, ContainerPhase phase, int index, int member, int depth)
    {
        switch (kind)
        {
            case ContainerKind.Root:
                return phase == ContainerPhase.RootValue ? node.MinBytes : 0;
            case ContainerKind.Object:
                {
                    ObjectNode o = Unsafe.As<ObjectNode>(node);
                    bool map = o.Properties.Length == 0;
                    switch (phase)
                    {
                        case ContainerPhase.Open:
                            return o.RequiredSuffix[index] - (o.NextRequired[index] < o.Properties.Length ? 1 : 0) + 1L;
                        case ContainerPhase.AfterValue:
                            return o.RequiredSuffix[index] + 1L;
                        case ContainerPhase.KeyStart:
                            {
                                if (map)
                                {
                                    return 3L + o.MapValue!.MinBytes + 1;
                                }

                                long best = GrammarNode.Unreachable;
                                for (int j = index, last = Math.Min(o.NextRequired[index], o.Properties.Length - 1); j <= last; j++)
                                {
                                    if (depth + o.Properties[j].Node.MinDepth <= Max)
                                    {
                                        best = Math.Min(best, (long)o.MemberBytes(j) + o.RequiredSuffix[j + 1]);
                                    }
                                }

                                return best + 1;
                            }

                        default:
                            {
                                // Colon or Value: the member's value is still to come.
                                long value = map ? o.MapValue!.MinBytes : o.Properties[member].Node.MinBytes;
                                return (phase == ContainerPhase.Colon ? 1 : 0) + value + o.RequiredSuffix[index] + 1;
                            }
                    }
                }

            default:
                {
                    ArrayNode a = Unsafe.As<ArrayNode>(node);
                    long item = a.Items.MinBytes;
                    return phase switch
                    {
                        ContainerPhase.Open => a.Min == 0 ? 1 : (a.Min * item) + a.Min,
                        ContainerPhase.AfterValue => (Math.Max(0, a.Min - index) * (1 + item)) + 1,
                        _ => item + (Math.Max(0, a.Min - index - 1) * (1 + item)) + 1,
                    };
                }
        }
    }

    /// <summary>Advances by one byte; false (state then undefined) when the byte cannot come next.</summary>
    public static bool Step(ref JsonMatchState s, byte b)
    {
        switch (s.Scalar)
        {
            case ScalarKind.None:
                break;
            case ScalarKind.String:
            case ScalarKind.FreeKey:
                return StepString(ref s, b);
            case ScalarKind.DeclaredKey:
                return StepKey(ref s, b);
            case ScalarKind.Number:
                {
                    int r = StepNumber(ref s, b);
                    if (r >= 0)
                    {
                        return r == 1;
                    }

                    // The number ended before this byte: the container takes it.
                    s.Scalar = ScalarKind.None;
                    break;
                }

            case ScalarKind.Format:
                {
                    FormatNode format = Unsafe.As<FormatNode>(s.ScalarNode!);
                    int next = format.Next(s.S0, b);
                    if (next < 0)
                    {
                        return false;
                    }

                    if (next == format.Final)
                    {
                        s.Scalar = ScalarKind.None;
                        s.ScalarNode = null;
                    }
                    else
                    {
                        s.S0 = next;
                    }

                    return true;
                }

            case ScalarKind.Literal:
                {
                    ByteTrie trie = Unsafe.As<LiteralNode>(s.ScalarNode!).Trie;
                    int child = trie.Child(s.S0, b);
                    if (child >= 0)
                    {
                        s.S0 = child;
                        return true;
                    }

                    if (!trie.IsTerminal(s.S0))
                    {
                        return false;
                    }

                    s.Scalar = ScalarKind.None;
                    break;
                }
        }

        return StepContainer(ref s, b);
    }

    private static bool StepContainer(ref JsonMatchState s, byte b)
    {
        switch (s.Kind)
        {
            case ContainerKind.Root:
                if (s.Phase != ContainerPhase.RootValue)
                {
                    return false;
                }

                s.Phase = ContainerPhase.Done;
                return StartValue(ref s, s.Node!, b);

            case ContainerKind.Object:
                return StepObject(ref s, b);

            default:
                return StepArray(ref s, b);
        }
    }

    private static bool StepObject(ref JsonMatchState s, byte b)
    {
        ObjectNode o = Unsafe.As<ObjectNode>(s.Node!);
        switch (s.Phase)
        {
            case ContainerPhase.Open:
            case ContainerPhase.AfterValue:
                if (b == (byte)'}')
                {
                    return o.NextRequired[s.Index] == o.Properties.Length && Pop(ref s);
                }

                if (s.Phase == ContainerPhase.Open ? b != (byte)'"' : b != (byte)',')
                {
                    return false;
                }

                if (!CanStartMember(in s, o))
                {
                    return false;
                }

                if (b == (byte)',')
                {
                    s.Phase = ContainerPhase.KeyStart;
                    return true;
                }

                BeginKey(ref s, o);
                return true;

            case ContainerPhase.KeyStart:
                if (b != (byte)'"')
                {
                    return false;
                }

                BeginKey(ref s, o);
                return true;

            case ContainerPhase.Colon:
                if (b != (byte)':')
                {
                    return false;
                }

                s.Phase = ContainerPhase.Value;
                return true;

            case ContainerPhase.Value:
                s.Phase = ContainerPhase.AfterValue;
                return StartValue(ref s, o.Properties.Length > 0 ? o.Properties[s.Member].Node : o.MapValue!, b);

            default:
                return false;
        }
    }

    private static bool CanStartMember(in JsonMatchState s, ObjectNode o)
    {
        if (o.Properties.Length == 0)
        {
            return o.MapValue is not null && s.Depth + o.MapValue.MinDepth <= Max;
        }

        int last = Math.Min(o.NextRequired[s.Index], o.Properties.Length - 1);
        for (int j = s.Index; j <= last; j++)
        {
            if (s.Depth + o.Properties[j].Node.MinDepth <= Max)
            {
                return true;
            }
        }

        return false;
    }

    private static void BeginKey(ref JsonMatchState s, ObjectNode o)
    {
        if (o.Properties.Length == 0)
        {
            s.Scalar = ScalarKind.FreeKey;
            s.ScalarNode = StringNode.Unbounded;
            s.S0 = 0;
            s.S1 = StrNormal;
        }
        else
        {
            s.Scalar = ScalarKind.DeclaredKey;
            s.ScalarNode = o;
            s.S0 = 0;
        }
    }

    private static bool StepKey(ref JsonMatchState s, byte b)
    {
        ObjectNode o = Unsafe.As<ObjectNode>(s.Node!);
        int child = o.Keys.Child(s.S0, b);
        if (child < 0)
        {
            return false;
        }

        // Some property still matching must be a candidate: not before the next index, not past the next required one.
        int last = o.NextRequired[s.Index];
        bool ok = false;
        foreach (int j in o.KeyOwners[child])
        {
            if (j >= s.Index && j <= last && s.Depth + o.Properties[j].Node.MinDepth <= Max)
            {
                ok = true;
                break;
            }
        }

        if (!ok)
        {
            return false;
        }

        int ended = o.Keys.TerminalKey(child);
        if (ended >= 0)
        {
            s.Scalar = ScalarKind.None;
            s.ScalarNode = null;
            s.Member = ended;
            s.Index = ended + 1;
            s.Emitted = true;
            s.Phase = ContainerPhase.Colon;
        }
        else
        {
            s.S0 = child;
        }

        return true;
    }

    private static bool StepArray(ref JsonMatchState s, byte b)
    {
        ArrayNode a = Unsafe.As<ArrayNode>(s.Node!);
        switch (s.Phase)
        {
            case ContainerPhase.Open:
                if (b == (byte)']')
                {
                    return s.Index >= a.Min && Pop(ref s);
                }

                if (!CanAddItem(in s, a))
                {
                    return false;
                }

                s.Index++;
                s.Phase = ContainerPhase.AfterValue;
                return StartValue(ref s, a.Items, b);

            case ContainerPhase.AfterValue:
                if (b == (byte)']')
                {
                    return s.Index >= a.Min && Pop(ref s);
                }

                if (b != (byte)',' || !CanAddItem(in s, a))
                {
                    return false;
                }

                s.Phase = ContainerPhase.Value;
                return true;

            case ContainerPhase.Value:
                s.Index++;
                s.Phase = ContainerPhase.AfterValue;
                return StartValue(ref s, a.Items, b);

            default:
                return false;
        }
    }

    private static bool CanAddItem(in JsonMatchState s, ArrayNode a) =>
        s.Index < a.Max && (s.Index < a.Min || s.Depth + a.Items.MinDepth <= Max);

    /// <summary>Starts a value of the node with its first byte; the container's phase is already the one after the value.</summary>
    private static bool StartValue(ref JsonMatchState s, GrammarNode node, byte b)
    {
        if (node.Kind == GrammarKind.Union)
        {
            UnionNode u = Unsafe.As<UnionNode>(node);
            int alternative = u.ByFirstByte[b];
            if (alternative < 0)
            {
                return false;
            }

            node = u.Alternatives[alternative];
            if (s.Depth + node.MinDepth > Max)
            {
                return false;
            }
        }

        switch (node.Kind)
        {
            case GrammarKind.Object:
                return b == (byte)'{' && Push(ref s, ContainerKind.Object, node);
            case GrammarKind.Array:
                return b == (byte)'[' && Push(ref s, ContainerKind.Array, node);
            case GrammarKind.String:
                if (b != (byte)'"')
                {
                    return false;
                }

                s.Scalar = ScalarKind.String;
                s.ScalarNode = node;
                s.S0 = 0;
                s.S1 = StrNormal;
                return true;
            case GrammarKind.Number:
                s.Scalar = ScalarKind.Number;
                s.ScalarNode = node;
                s.S0 = NumStart;
                s.S1 = 0;
                return StepNumber(ref s, b) == 1;
            case GrammarKind.Format:
                if (b != (byte)'"')
                {
                    return false;
                }

                s.Scalar = ScalarKind.Format;
                s.ScalarNode = node;
                s.S0 = 0;
                return true;
            case GrammarKind.Literal:
                {
                    int child = Unsafe.As<LiteralNode>(node).Trie.Child(0, b);
                    if (child < 0)
                    {
                        return false;
                    }

                    s.Scalar = ScalarKind.Literal;
                    s.ScalarNode = node;
                    s.S0 = child;
                    return true;
                }

            case GrammarKind.Any:
                switch (b)
                {
                    case (byte)'{':
                        return s.Depth < Max && Push(ref s, ContainerKind.Object, ObjectNode.AnyObject);
                    case (byte)'[':
                        return s.Depth < Max && Push(ref s, ContainerKind.Array, ArrayNode.AnyArray);
                    case (byte)'"':
                        return StartValue(ref s, StringNode.Unbounded, b);
                    case (byte)'t' or (byte)'f' or (byte)'n':
                        return StartValue(ref s, LiteralNode.TrueFalseNull, b);
                    default:
                        return StartValue(ref s, NumberNode.AnyNumber, b);
                }

            default:
                return false;
        }
    }

    private static bool Push(ref JsonMatchState s, ContainerKind kind, GrammarNode node)
    {
        if (s.Depth + node.MinDepth > Max)
        {
            return false;
        }

        s.Below = new ContainerFrame(s.Below, s.Kind, s.Node, s.Phase, s.Index, s.Member, s.Emitted, s.Depth);
        s.Kind = kind;
        s.Node = node;
        s.Phase = ContainerPhase.Open;
        s.Index = 0;
        s.Member = 0;
        s.Emitted = false;
        s.Depth++;
        return true;
    }

    private static bool Pop(ref JsonMatchState s)
    {
        ContainerFrame f = s.Below!;
        s.Below = f.Below;
        s.Kind = f.Kind;
        s.Node = f.Node;
        s.Phase = f.Phase;
        s.Index = f.Index;
        s.Member = f.Member;
        s.Emitted = f.Emitted;
        s.Depth = f.Depth;
        return true;
    }

    private static void EndString(ref JsonMatchState s)
    {
        if (s.Scalar == ScalarKind.FreeKey)
        {
            s.Emitted = true;
            s.Phase = ContainerPhase.Colon;
        }

        s.Scalar = ScalarKind.None;
        s.ScalarNode = null;
    }

    private static bool StepString(ref JsonMatchState s, byte b)
    {
        StringNode node = Unsafe.As<StringNode>(s.ScalarNode!);
        int count = s.S0;
        switch (s.S1)
        {
            case StrNormal:
                if (b == (byte)'"')
                {
                    if (count < node.Min)
                    {
                        return false;
                    }

                    EndString(ref s);
                    return true;
                }

                if (b < 0x20)
                {
                    return false;
                }

                if (b < 0x80)
                {
                    // Below minLength only printable ASCII: one unit, one code point and one text element each.
                    if (count >= node.Max || (b == (byte)'\\' && count < node.Min) || (b == 0x7F && count < node.Min))
                    {
                        return false;
                    }

                    s.S0 = count + 1;
                    if (b == (byte)'\\')
                    {
                        s.S1 = StrEscape;
                    }

                    return true;
                }

                if (count < node.Min)
                {
                    return false;
                }

                // UTF-8 lead byte: S2 packs remaining continuation bytes (bits 16+), next byte's low and high bound.
                int units = 1;
                int remaining;
                int lo = 0x80, hi = 0xBF;
                if (b >= 0xC2 && b <= 0xDF)
                {
                    remaining = 1;
                }
                else if (b >= 0xE0 && b <= 0xEF)
                {
                    remaining = 2;
                    if (b == 0xE0)
                    {
                        lo = 0xA0;
                    }
                    else if (b == 0xED)
                    {
                        hi = 0x9F;
                    }
                }
                else if (b >= 0xF0 && b <= 0xF4)
                {
                    remaining = 3;
                    units = 2;
                    if (b == 0xF0)
                    {
                        lo = 0x90;
                    }
                    else if (b == 0xF4)
                    {
                        hi = 0x8F;
                    }
                }
                else
                {
                    return false;
                }

                if (count > node.Max - units)
                {
                    return false;
                }

                s.S0 = count + units;
                s.S1 = StrUtf8;
                s.S2 = (remaining << 16) | (lo << 8) | hi;
                return true;

            case StrUtf8:
                {
                    int packed = s.S2;
                    if (b < ((packed >> 8) & 0xFF) || b > (packed & 0xFF))
                    {
                        return false;
                    }

                    int left = (packed >> 16) - 1;
                    if (left == 0)
                    {
                        s.S1 = StrNormal;
                    }
                    else
                    {
                        s.S2 = (left << 16) | (0x80 << 8) | 0xBF;
                    }

                    return true;
                }

            case StrEscape:
                switch (b)
                {
                    case (byte)'"' or (byte)'\\' or (byte)'/' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t':
                        s.S1 = StrNormal;
                        return true;
                    case (byte)'u':
                        s.S1 = StrHex0;
                        s.S2 = 0;
                        return true;
                    default:
                        return false;
                }

            default:
                {
                    // \uXXXX: no surrogates (D800-DFFF), which System.Text.Json refuses when unpaired.
                    int digit = HexValue(b);
                    if (digit < 0)
                    {
                        return false;
                    }

                    int read = s.S1 - StrHex0;
                    if (read == 1 && s.S2 == 0xD && digit >= 8)
                    {
                        return false;
                    }

                    s.S2 = digit;
                    s.S1 = read == 3 ? StrNormal : s.S1 + 1;
                    return true;
                }
        }
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };

    /// <summary>1: consumed; 0: rejected; -1: the number ended before this byte.</summary>
    private static int StepNumber(ref JsonMatchState s, byte b)
    {
        bool integer = Unsafe.As<NumberNode>(s.ScalarNode!).Integer;
        bool digit = b >= (byte)'0' && b <= (byte)'9';
        switch (s.S0)
        {
            case NumStart:
                if (b == (byte)'-')
                {
                    s.S0 = NumMinus;
                    return 1;
                }

                goto case NumMinus;
            case NumMinus:
                if (!digit)
                {
                    return 0;
                }

                s.S0 = b == (byte)'0' ? NumZero : NumInt;
                s.S1 = 1;
                return 1;
            case NumZero:
            case NumInt:
                if (digit && s.S0 == NumInt && s.S1 < (integer ? SchemaCompiler.MaxIntegerDigits : SchemaCompiler.MaxNumberDigits))
                {
                    s.S1++;
                    return 1;
                }

                if (digit)
                {
                    return 0;
                }

                if (b == (byte)'.' && !integer)
                {
                    s.S0 = NumDot;
                    return 1;
                }

                return -1;
            case NumDot:
                if (!digit)
                {
                    return 0;
                }

                s.S0 = NumFrac;
                s.S1 = 1;
                return 1;
            default:
                if (digit)
                {
                    if (s.S1 >= SchemaCompiler.MaxNumberDigits)
                    {
                        return 0;
                    }

                    s.S1++;
                    return 1;
                }

                return -1;
        }
    }
}
