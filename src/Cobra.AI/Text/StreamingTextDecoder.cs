namespace Cobra.AI.Text;

/// <summary>
/// Turns a growing list of generated ids into text deltas whose concatenation is always a prefix of the
/// final answer (<see cref="CobraTokenizer.DecodeForOutput"/> cut at the first stop sequence). Text is held
/// back while it could still change: an incomplete UTF-8 character (decoded as U+FFFD at the end), trailing
/// whitespace (stripped at the end, or removed by the clean-up before punctuation), a space that may start a
/// clean-up pattern (" n't", " 's", " ."...), and any suffix that may start a stop sequence.
/// </summary>
internal sealed class StreamingTextDecoder
{
    /// <summary>What transformers' clean-up removes the space before (cobra-spec §8.2).</summary>
    private static readonly string[] CleanUpContinuations = [".", "?", "!", ",", "' ", "n't", "'m", "'s", "'ve", "'re"];

    private readonly CobraTokenizer tokenizer;
    private readonly IReadOnlyList<string> stopSequences;
    private readonly List<int> ids = [];
    private int emitted;

    /// <summary>Starts an empty answer.</summary>
    public StreamingTextDecoder(CobraTokenizer tokenizer, IReadOnlyList<string>? stopSequences)
    {
        this.tokenizer = tokenizer;
        this.stopSequences = stopSequences?.Where(s => !string.IsNullOrEmpty(s)).ToArray() ?? [];
    }

    /// <summary>True once a stop sequence appeared in the answer; no more text will be produced.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Text emitted so far.</summary>
    public string Text { get; private set; } = "";

    /// <summary>Adds one generated id and returns the text that became final (possibly empty).</summary>
    public string Add(int id)
    {
        ids.Add(id);
        var (text, stopped) = Candidate();
        Stopped = stopped;
        int safe = stopped ? text.Length : SafeLength(text);
        return Emit(text, safe);
    }

    /// <summary>Generation ended: returns the rest of the final answer.</summary>
    public string Finish()
    {
        var (text, _) = Candidate();
        return Emit(text, text.Length);
    }

    private string Emit(string text, int safe)
    {
        if (safe <= emitted)
        {
            return "";
        }

        string delta = text[emitted..safe];
        emitted = safe;
        Text = text[..safe];
        return delta;
    }

    /// <summary>The answer as it would read if generation stopped now, cut at the first stop sequence.</summary>
    private (string Text, bool Stopped) Candidate()
    {
        string text = tokenizer.DecodeForOutput(ids);
        int cut = -1;
        foreach (var stop in stopSequences)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut))
            {
                cut = at;
            }
        }

        return cut >= 0 ? (PythonString.StripEnd(text[..cut]), true) : (text, false);
    }

    /// <summary>How much of the candidate cannot change any more.</summary>
    private int SafeLength(string text)
    {
        int safe = text.Length;

        // The decoder writes U+FFFD for a character whose bytes have not all arrived yet.
        while (safe > 0 && text[safe - 1] == '\uFFFD')
        {
            safe--;
        }

        // DecodeForOutput strips the end, so the candidate never ends in whitespace; but more tokens may bring
        // a space followed by a clean-up continuation: hold back a space whose tail may still become one.
        int space = text.LastIndexOf(' ', Math.Max(0, safe - 1));
        if (space >= 0 && space < safe && CleanUpContinuations.Any(c => c.StartsWith(text[(space + 1)..safe], StringComparison.Ordinal)))
        {
            safe = space;
        }

        // The whitespace before the held-back part is also unsafe: it is stripped if the answer ends there.
        while (safe > 0 && PythonString.IsSpace(text[safe - 1]))
        {
            safe--;
        }

        // A suffix that is a prefix of a stop sequence may become that stop sequence.
        foreach (var stop in stopSequences)
        {
            for (int length = Math.Min(stop.Length - 1, safe); length > 0; length--)
            {
                if (string.CompareOrdinal(text, safe - length, stop, 0, length) == 0)
                {
                    safe -= length;
                    break;
                }
            }
        }

        return Math.Max(safe, Math.Min(emitted, text.Length));
    }
}
