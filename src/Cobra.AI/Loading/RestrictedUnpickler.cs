using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace Cobra.AI.Loading;

/// <summary>
/// A small pickle VM for the protocol 2-5 opcodes <c>torch.save</c> emits. It builds plain data only:
/// dicts become <see cref="OrderedDictionary{TKey,TValue}"/> with string keys, lists <see cref="List{T}"/>,
/// tuples <c>object?[]</c>, ints <see cref="long"/>, floats <see cref="double"/>, text <see cref="string"/>,
/// bytes <c>byte[]</c>. Globals, calls and persistent ids all go through <see cref="IPickleHooks"/>; any
/// other opcode is rejected. Stack, mark and memo sizes are bounded so a hostile file cannot exhaust memory,
/// and the work done (values pushed, moved and stored) is bounded by the file's length, so re-applying a
/// memoized container again and again (BUILD or SETITEMS on a recalled dict) cannot make a small file run long.
/// </summary>
internal sealed class RestrictedUnpickler
{
    /// <summary>Most values the stack or memo may hold; a state_dict pickle needs a few per tensor.</summary>
    public const int MaxEntries = 1 << 22;

    /// <summary>Deepest MARK nesting accepted; real checkpoints nest a handful of levels.</summary>
    public const int MaxMarkDepth = 512;

    /// <summary>
    /// Work units allowed per pickle byte (plus <see cref="BaseWork"/>): each value pushed, moved off the stack or
    /// stored into a container costs one, so an honest pickle, which builds every item once, needs about three per byte.
    /// </summary>
    public const int MaxWorkPerByte = 4;

    /// <summary>Work allowed regardless of size, for tiny pickles.</summary>
    public const long BaseWork = 1 << 16;

    private const int MaxGlobalNameBytes = 1024;
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly byte[] data;
    private readonly string sourceName;
    private readonly IPickleHooks hooks;
    private readonly List<object?> stack = [];
    private readonly List<int> marks = [];
    private readonly Dictionary<long, object?> memo = [];
    private readonly long maxWork;
    private long work;
    private int position;

    private RestrictedUnpickler(byte[] data, string sourceName, IPickleHooks hooks)
    {
        this.data = data;
        this.sourceName = sourceName;
        this.hooks = hooks;
        maxWork = BaseWork + ((long)MaxWorkPerByte * data.Length);
    }

    /// <summary>Runs <paramref name="data"/> to its STOP opcode and returns the top value.</summary>
    public static object? Load(byte[] data, string sourceName, IPickleHooks hooks) =>
        new RestrictedUnpickler(data, sourceName, hooks).Run();

    private object? Run()
    {
        while (true)
        {
            var opcode = ReadByte();
            if (opcode == '.')
            {
                return Pop();
            }

            Execute(opcode);
        }
    }

    private void Execute(byte opcode)
    {
        switch (opcode)
        {
            case 0x80: ReadProtocol(); break; // PROTO
            case 0x95: ReadUInt64(); break; // FRAME: the whole pickle is in memory already
            case (byte)'}': Push(new OrderedDictionary<string, object?>(StringComparer.Ordinal)); break; // EMPTY_DICT
            case (byte)']': Push(new List<object?>()); break; // EMPTY_LIST
            case (byte)')': Push(Array.Empty<object?>()); break; // EMPTY_TUPLE
            case (byte)'(': PushMark(); break; // MARK
            case (byte)'t': Push(PopToMark()); break; // TUPLE
            case 0x85: Push(PopTuple(1)); break; // TUPLE1
            case 0x86: Push(PopTuple(2)); break; // TUPLE2
            case 0x87: Push(PopTuple(3)); break; // TUPLE3
            case (byte)'X': Push(ReadUtf8(ReadUInt32())); break; // BINUNICODE
            case 0x8c: Push(ReadUtf8(ReadByte())); break; // SHORT_BINUNICODE
            case 0x8d: Push(ReadUtf8(ReadUInt64())); break; // BINUNICODE8
            case (byte)'T': Push(ReadLatin1(ReadInt32Length())); break; // BINSTRING
            case (byte)'U': Push(ReadLatin1(ReadByte())); break; // SHORT_BINSTRING
            case (byte)'B': Push(ReadBytes(ReadUInt32()).ToArray()); break; // BINBYTES
            case (byte)'C': Push(ReadBytes(ReadByte()).ToArray()); break; // SHORT_BINBYTES
            case 0x8e: Push(ReadBytes(ReadUInt64()).ToArray()); break; // BINBYTES8
            case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4))); break; // BININT
            case (byte)'K': Push((long)ReadByte()); break; // BININT1
            case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadBytes(2))); break; // BININT2
            case 0x8a: Push(ReadLong1()); break; // LONG1
            case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadBytes(8))); break; // BINFLOAT
            case (byte)'N': Push(null); break; // NONE
            case 0x88: Push(true); break; // NEWTRUE
            case 0x89: Push(false); break; // NEWFALSE
            case (byte)'c': Push(hooks.ResolveGlobal(ReadLine(), ReadLine())); break; // GLOBAL
            case 0x93: StackGlobal(); break; // STACK_GLOBAL
            case (byte)'R': Call(); break; // REDUCE
            case 0x81: Call(); break; // NEWOBJ: cls.__new__(cls, *args); the hooks treat it like a call
            case (byte)'b': Build(); break; // BUILD
            case (byte)'Q': Push(hooks.PersistentLoad(Pop())); break; // BINPERSID
            case (byte)'q': Memoize(ReadByte()); break; // BINPUT
            case (byte)'r': Memoize(ReadUInt32()); break; // LONG_BINPUT
            case 0x94: Memoize(memo.Count); break; // MEMOIZE
            case (byte)'h': Push(Recall(ReadByte())); break; // BINGET
            case (byte)'j': Push(Recall(ReadUInt32())); break; // LONG_BINGET
            case (byte)'s': SetItems(PopTuple(2)); break; // SETITEM
            case (byte)'u': SetItems(PopToMark()); break; // SETITEMS
            case (byte)'a': Append(PopTuple(1)); break; // APPEND
            case (byte)'e': Append(PopToMark()); break; // APPENDS
            default: throw Fail($"unsupported pickle opcode 0x{opcode:x2} ('{(char)opcode}')", position - 1);
        }
    }

    private void ReadProtocol()
    {
        var protocol = ReadByte();
        if (protocol is < 2 or > 5)
        {
            throw Fail($"unsupported pickle protocol {protocol}", position - 1);
        }
    }

    private void StackGlobal()
    {
        var name = Pop() as string;
        var module = Pop() as string;
        if (module is null || name is null)
        {
            throw Fail("STACK_GLOBAL needs two strings", position - 1);
        }

        Push(hooks.ResolveGlobal(module, name));
    }

    private void Call()
    {
        var args = Pop() as object?[] ?? throw Fail("call arguments are not a tuple", position - 1);
        var callable = Pop();
        Push(hooks.Invoke(callable, args));
    }

    private void Build()
    {
        var state = Pop();
        // Only a dict updated with a dict is plain data; any other __setstate__ could mean running code.
        if (Peek() is OrderedDictionary<string, object?> target && state is OrderedDictionary<string, object?> items)
        {
            Charge(items.Count);
            foreach (var (key, value) in items)
            {
                target[key] = value;
            }

            return;
        }

        throw Fail($"BUILD of {Describe(Peek())} with {Describe(state)} is not supported", position - 1);
    }

    private void SetItems(object?[] pairs)
    {
        if (pairs.Length % 2 != 0)
        {
            throw Fail("SETITEMS needs key/value pairs", position - 1);
        }

        if (Peek() is not OrderedDictionary<string, object?> dict)
        {
            throw Fail($"SETITEM on {Describe(Peek())}, not a dict", position - 1);
        }

        Charge(pairs.Length / 2);
        for (var i = 0; i < pairs.Length; i += 2)
        {
            dict[DictKey(pairs[i])] = pairs[i + 1];
        }
    }

    private string DictKey(object? key) => key switch
    {
        string text => text,
        // Integer keys (optimizer state) are kept, spelled as Python would print them.
        long number => number.ToString(CultureInfo.InvariantCulture),
        _ => throw Fail($"dict key {Describe(key)} is not a string or integer", position - 1),
    };

    private void Append(object?[] items)
    {
        if (Peek() is not List<object?> list)
        {
            throw Fail($"APPEND on {Describe(Peek())}, not a list", position - 1);
        }

        if (list.Count + items.Length > MaxEntries)
        {
            throw Fail($"list exceeds {MaxEntries} items", position - 1);
        }

        Charge(items.Length);
        list.AddRange(items);
    }

    private void Memoize(long index)
    {
        if (memo.Count >= MaxEntries && !memo.ContainsKey(index))
        {
            throw Fail($"memo exceeds {MaxEntries} entries", position - 1);
        }

        memo[index] = Peek();
    }

    private object? Recall(long index) =>
        memo.TryGetValue(index, out var value) ? value : throw Fail($"memo index {index} was never stored", position - 1);

    private void PushMark()
    {
        if (marks.Count >= MaxMarkDepth)
        {
            throw Fail($"MARKs nest deeper than {MaxMarkDepth}", position - 1);
        }

        marks.Add(stack.Count);
    }

    private object?[] PopToMark()
    {
        if (marks.Count == 0)
        {
            throw Fail("no MARK to pop to", position - 1);
        }

        var mark = marks[^1];
        marks.RemoveAt(marks.Count - 1);
        Charge(stack.Count - mark);
        var items = stack.GetRange(mark, stack.Count - mark).ToArray();
        stack.RemoveRange(mark, stack.Count - mark);
        return items;
    }

    private object?[] PopTuple(int count)
    {
        var floor = marks.Count == 0 ? 0 : marks[^1];
        if (stack.Count - floor < count)
        {
            throw Fail("stack underflow", position - 1);
        }

        Charge(count);
        var items = stack.GetRange(stack.Count - count, count).ToArray();
        stack.RemoveRange(stack.Count - count, count);
        return items;
    }

    private object? Pop() => PopTuple(1)[0];

    private object? Peek()
    {
        var floor = marks.Count == 0 ? 0 : marks[^1];
        return stack.Count > floor ? stack[^1] : throw Fail("stack underflow", position - 1);
    }

    private void Push(object? value)
    {
        if (stack.Count >= MaxEntries)
        {
            throw Fail($"stack exceeds {MaxEntries} values", position);
        }

        Charge(1);
        stack.Add(value);
    }

    private void Charge(long units)
    {
        work += units;
        if (work > maxWork)
        {
            throw Fail($"the pickle does more than {maxWork} units of work for its {data.Length} bytes (RestrictedUnpickler.MaxWorkPerByte = {MaxWorkPerByte}): it re-applies shared containers", position - 1);
        }
    }

    private byte ReadByte() => ReadBytes(1)[0];

    private long ReadUInt32() => BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4));

    private long ReadInt32Length()
    {
        var length = BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4));
        return length >= 0 ? length : throw Fail($"negative string length {length}", position - 4);
    }

    private long ReadUInt64()
    {
        var value = BinaryPrimitives.ReadUInt64LittleEndian(ReadBytes(8));
        return value <= long.MaxValue ? (long)value : throw Fail($"length {value} is too large", position - 8);
    }

    private long ReadLong1()
    {
        var length = ReadByte();
        if (length > 8)
        {
            throw Fail($"{length}-byte integer does not fit in 64 bits", position - 1);
        }

        var bytes = ReadBytes(length);
        if (length == 0)
        {
            return 0;
        }

        // Two's complement, little-endian: sign-extend from the top byte.
        Span<byte> wide = stackalloc byte[8];
        wide.Fill((bytes[^1] & 0x80) != 0 ? (byte)0xff : (byte)0);
        bytes.CopyTo(wide);
        return BinaryPrimitives.ReadInt64LittleEndian(wide);
    }

    private string ReadUtf8(long length)
    {
        var start = position;
        var bytes = ReadBytes(length);
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw Fail($"invalid UTF-8 in string ({e.Message})", start);
        }
    }

    private string ReadLatin1(long length) => Encoding.Latin1.GetString(ReadBytes(length));

    private string ReadLine()
    {
        var start = position;
        var end = Array.IndexOf(data, (byte)'\n', start, Math.Min(MaxGlobalNameBytes, data.Length - start));
        if (end < 0)
        {
            throw Fail("unterminated GLOBAL name", start);
        }

        position = end + 1;
        return Encoding.ASCII.GetString(data, start, end - start);
    }

    private ReadOnlySpan<byte> ReadBytes(long count)
    {
        if (count > data.Length - position)
        {
            throw Fail($"pickle ends early (needs {count} more bytes, {data.Length - position} left)", position);
        }

        var span = data.AsSpan(position, (int)count);
        position += (int)count;
        return span;
    }

    private static string Describe(object? value) => value switch
    {
        null => "None",
        string => "a string",
        _ => $"a {value.GetType().Name}",
    };

    private InvalidDataException Fail(string problem, int at) =>
        CheckpointErrors.Invalid(sourceName, $"{problem} at pickle byte {at}");
}
