namespace Cobra.AI.Generation.Constrained;

/// <summary>
/// A string of a fixed-shape <c>format</c> (uuid, date, date-time), matched by a small DFA over the bytes after
/// the opening quote, closing quote included. The shapes are subsets that every validator and System.Text.Json
/// accept: years 1000-9999, days 01-28 (valid in every month), no leap seconds, offsets up to ±13:59.
/// </summary>
internal sealed class FormatNode : GrammarNode
{
    private const int Dead = -1;

    private readonly int[] _next; // state * 256 + byte -> state or Dead
    private readonly int[] _toFinal;

    private FormatNode(string path, string format, List<int[]> states, int final)
        : base(GrammarKind.Format, path)
    {
        Format = format;
        Final = final;
        _next = new int[states.Count * 256];
        for (int s = 0; s < states.Count; s++)
        {
            Array.Copy(states[s], 0, _next, s * 256, 256);
        }

        // Shortest way to the final state, by relaxation (the DFAs are small and acyclic).
        _toFinal = new int[states.Count];
        Array.Fill(_toFinal, Unreachable);
        _toFinal[final] = 0;
        for (bool changed = true; changed;)
        {
            changed = false;
            for (int s = 0; s < states.Count; s++)
            {
                for (int b = 0; b < 256; b++)
                {
                    int t = states[s][b];
                    if (t != Dead && _toFinal[t] + 1 < _toFinal[s])
                    {
                        _toFinal[s] = _toFinal[t] + 1;
                        changed = true;
                    }
                }
            }
        }

        MinDepth = 0;
        MinBytes = 1 + _toFinal[0];
    }

    /// <summary>The format's name.</summary>
    public string Format { get; }

    /// <summary>The state after the closing quote.</summary>
    public int Final { get; }

    /// <summary>The formats this node can enforce.</summary>
    public static bool IsSupported(string format) => format is "uuid" or "date" or "date-time";

    /// <summary>The next state, or -1.</summary>
    public int Next(int state, byte b) => _next[(state * 256) + b];

    /// <summary>Fewest bytes from a state to the closing quote, inclusive.</summary>
    public int ToFinal(int state) => _toFinal[state];

    /// <summary>Builds the DFA of a supported format.</summary>
    public static FormatNode Create(string path, string format)
    {
        var builder = new Builder();
        int end;
        switch (format)
        {
            case "uuid":
                end = builder.Classes(0, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
                break;
            case "date":
                end = Date(builder, 0);
                break;
            case "date-time":
                {
                    int time = builder.Classes(Date(builder, 0), "T");
                    int seconds = builder.Classes(Hour(builder, time), ":5d:5d");

                    // Then an optional fraction of 1-7 digits, then Z or an offset of at most 13:59.
                    end = builder.New();
                    int sign = builder.New();
                    builder.Link(seconds, "Z", end);
                    builder.Link(seconds, "+-", sign);
                    int fraction = builder.Classes(seconds, ".");
                    for (int k = 0; k < 7; k++)
                    {
                        int digit = builder.New();
                        builder.Link(fraction, "0123456789", digit);
                        builder.Link(digit, "Z", end);
                        builder.Link(digit, "+-", sign);
                        fraction = digit;
                    }

                    int h0 = builder.New(), h1 = builder.New(), offsetHour = builder.New();
                    builder.Link(sign, "0", h0);
                    builder.Link(sign, "1", h1);
                    builder.Link(h0, "0123456789", offsetHour);
                    builder.Link(h1, "0123", offsetHour);
                    int colon = builder.Classes(offsetHour, ":5");
                    builder.Link(colon, "0123456789", end);
                    break;
                }

            default:
                throw new ArgumentOutOfRangeException(nameof(format), format, "Unsupported format.");
        }

        int final = builder.New();
        builder.Link(end, "\"", final);
        return new FormatNode(path, format, builder.States, final);
    }

    private static int Date(Builder builder, int start)
    {
        int year = builder.Classes(start, "1ddd-");
        int m0 = builder.New(), m1 = builder.New(), month = builder.New();
        builder.Link(year, "0", m0);
        builder.Link(year, "1", m1);
        builder.Link(m0, "123456789", month);
        builder.Link(m1, "012", month);
        int dash = builder.Classes(month, "-");
        int d0 = builder.New(), d12 = builder.New(), d2 = builder.New(), day = builder.New();
        builder.Link(dash, "0", d0);
        builder.Link(dash, "1", d12);
        builder.Link(dash, "2", d2);
        builder.Link(d0, "123456789", day);
        builder.Link(d12, "0123456789", day);
        builder.Link(d2, "012345678", day);
        return day;
    }

    private static int Hour(Builder builder, int start)
    {
        int h01 = builder.New(), h2 = builder.New(), hour = builder.New();
        builder.Link(start, "01", h01);
        builder.Link(start, "2", h2);
        builder.Link(h01, "0123456789", hour);
        builder.Link(h2, "0123", hour);
        return hour;
    }

    private sealed class Builder
    {
        public Builder() => New();

        public List<int[]> States { get; } = [];

        public int New()
        {
            var row = new int[256];
            Array.Fill(row, Dead);
            States.Add(row);
            return States.Count - 1;
        }

        public void Link(int from, string bytes, int to)
        {
            foreach (char c in bytes)
            {
                States[from][c] = to;
            }
        }

        /// <summary>A chain from a state: 'x' hex digit, 'd' digit, '5' 0-5, '1' 1-9, anything else itself.</summary>
        public int Classes(int from, string spec)
        {
            int current = from;
            foreach (char c in spec)
            {
                int next = New();
                Link(current, c switch
                {
                    'x' => "0123456789abcdefABCDEF",
                    'd' => "0123456789",
                    '5' => "012345",
                    '1' => "123456789",
                    _ => c.ToString(),
                }, next);
                current = next;
            }

            return current;
        }
    }
}
