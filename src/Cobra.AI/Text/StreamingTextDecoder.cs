using System.Text;

namespace Cobra.AI.Text;

/// <summary>
/// Turns generated ids, one at a time, into text deltas whose concatenation is always a prefix of the final
/// answer: <see cref="CobraTokenizer.DecodeForOutput"/> of all ids, cut at the first stop sequence (and
/// stripped at the end there). Incremental, amortised O(1) per token: bytes go through a stateful UTF-8
/// decoder (an incomplete character waits inside it), and only a short raw tail stays open: trailing
/// whitespace (stripped if the answer ends there) and a space that may still start a clean-up pattern
/// (" n't", " ."...). The cleaned text is searched for stop sequences only where new text arrived.
/// </summary>
internal sealed class StreamingTextDecoder
{
    private static readonly string[] CleanUpPatterns = CobraTokenizer.CleanUpPatterns.ToArray();
    private static readonly int LongestPattern = CleanUpPatterns.Max(p => p.Length);

    private readonly CobraTokenizer tokenizer;
    private readonly string[] stopSequences;
    private readonly int longestStop;
    private readonly Decoder utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private readonly StringBuilder raw = new();                                 // decoded text not yet cleaned (the open tail)
    private readonly StringBuilder clean = new();                               // cleaned, left-stripped text that can no longer change
    private char[] chars = new char[64];
    private int searchedUpTo;                                                    // stop sequences cannot start before this index of clean + tail
    private int emitted;
    private string? final;

    private readonly bool verbatim;

    /// <summary>Starts an empty answer.</summary>
    /// <param name="tokenizer">The vocabulary.</param>
    /// <param name="stopSequences">Strings that end the answer.</param>
    /// <param name="verbatim">
    /// Decode the bytes as they are, without transformers' clean-up or the strip (structured output: a JSON
    /// string's " ," or leading space is content).
    /// </param>
    public StreamingTextDecoder(CobraTokenizer tokenizer, IReadOnlyList<string>? stopSequences, bool verbatim = false)
    {
        this.tokenizer = tokenizer;
        this.verbatim = verbatim;
        this.stopSequences = stopSequences?.Where(s => !string.IsNullOrEmpty(s)).Distinct().ToArray() ?? [];
        longestStop = this.stopSequences.Length == 0 ? 0 : this.stopSequences.Max(s => s.Length);
    }

    /// <summary>True once a stop sequence appeared in the answer; no more text will be produced.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Text emitted so far.</summary>
    public string Text => final is not null ? final[..emitted] : clean.ToString(0, emitted);

    /// <summary>Adds one generated id and returns the text that became final (possibly empty).</summary>
    public string Add(int id)
    {
        if (Stopped)
        {
            return "";
        }

        // Padding rows past the vocabulary and special tokens decode to nothing (skip_special_tokens=True).
        if ((uint)id < (uint)tokenizer.VocabularySize && !tokenizer.IsSpecial(id))
        {
            AppendBytes(tokenizer.TokenBytesUnchecked(id), flush: false);
        }

        CommitSafeRaw();
        if (FindStop() is int cut)
        {
            return Stop(cut);
        }

        return Emit(SafeEmitLength());
    }

    /// <summary>Generation ended: returns the rest of the final answer.</summary>
    public string Finish()
    {
        if (Stopped)
        {
            return "";
        }

        AppendBytes([], flush: true);
        if (FindStop() is int cut)
        {
            return Stop(cut);
        }

        string text = verbatim ? clean + Tail() : PythonString.StripEnd(clean + Tail());
        return EmitFinal(text);
    }

    private void AppendBytes(ReadOnlySpan<byte> bytes, bool flush)
    {
        int needed = utf8.GetCharCount(bytes, flush);
        if (needed > chars.Length)
        {
            chars = new char[Math.Max(needed, chars.Length * 2)];
        }

        int count = utf8.GetChars(bytes, chars, flush);
        raw.Append(chars, 0, count);
    }

    /// <summary>Cleans and moves to <see cref="clean"/> the longest raw prefix that no later text can change.</summary>
    private void CommitSafeRaw()
    {
        if (verbatim)
        {
            clean.Append(raw);
            raw.Clear();
            return;
        }

        int safe = raw.Length;

        // Trailing whitespace is stripped if the answer ends here.
        while (safe > 0 && PythonString.IsSpace(raw[safe - 1]))
        {
            safe--;
        }

        // A space whose following text is a proper prefix of a clean-up pattern may still lose that space: cut
        // before it, and look again, since the new cut may split another pattern (" ' '" -> " ' " at the first space).
        bool moved = true;
        while (moved)
        {
            moved = false;
            for (int p = Math.Max(0, safe - LongestPattern); p < safe; p++)
            {
                if (raw[p] == ' ' && CouldStartPattern(p, safe))
                {
                    safe = p;
                    moved = true;
                    break;
                }
            }

            while (safe > 0 && PythonString.IsSpace(raw[safe - 1]))
            {
                safe--;
                moved = true;
            }
        }

        if (safe == 0)
        {
            return;
        }

        string segment = CobraTokenizer.CleanUpTokenization(raw.ToString(0, safe));
        raw.Remove(0, safe);
        if (clean.Length == 0)
        {
            int start = 0;
            while (start < segment.Length && PythonString.IsSpace(segment[start]))
            {
                start++;
            }

            segment = segment[start..];
        }

        clean.Append(segment);
    }

    private bool CouldStartPattern(int start, int end)
    {
        int length = end - start;
        foreach (var pattern in CleanUpPatterns)
        {
            if (length < pattern.Length && Matches(raw, start, pattern, length))
            {
                return true;
            }
        }

        return false;
    }

    private static bool Matches(StringBuilder text, int start, string pattern, int length)
    {
        for (int i = 0; i < length; i++)
        {
            if (text[start + i] != pattern[i])
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The open raw tail as it would read if the answer ended now (cleaned; left-stripped when nothing is committed).</summary>
    private string Tail()
    {
        if (verbatim)
        {
            return raw.ToString();
        }

        string tail = CobraTokenizer.CleanUpTokenization(raw.ToString());
        return clean.Length == 0 ? PythonString.Strip(tail) : tail;
    }

    /// <summary>The index in clean + tail of the first stop sequence not searched before, or null.</summary>
    private int? FindStop()
    {
        if (stopSequences.Length == 0)
        {
            return null;
        }

        // The candidate answer now: committed text plus the open tail, stripped at the end as DecodeForOutput does.
        int from = Math.Max(0, searchedUpTo - longestStop + 1);
        string window = clean.ToString(from, clean.Length - from) + End(Tail());
        int cut = -1;
        foreach (var stop in stopSequences)
        {
            int at = window.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut))
            {
                cut = at;
            }
        }

        searchedUpTo = clean.Length;
        return cut < 0 ? null : from + cut;
    }

    private string Stop(int cut)
    {
        Stopped = true;
        string whole = clean + End(Tail());
        return EmitFinal(End(whole[..cut]));
    }

    private string End(string text) => verbatim ? text : PythonString.StripEnd(text);

    /// <summary>How much of <see cref="clean"/> may be shown: not a suffix that may still become a stop sequence, nor whitespace before it.</summary>
    private int SafeEmitLength()
    {
        int safe = clean.Length;
        foreach (var stop in stopSequences)
        {
            for (int length = Math.Min(stop.Length - 1, safe); length > 0; length--)
            {
                if (EndsWithPrefix(safe, stop, length))
                {
                    safe -= length;
                    break;
                }
            }
        }

        while (!verbatim && safe > emitted && PythonString.IsSpace(clean[safe - 1]))
        {
            safe--;
        }

        return Math.Max(safe, emitted);
    }

    private bool EndsWithPrefix(int end, string stop, int length)
    {
        for (int i = 0; i < length; i++)
        {
            if (clean[end - length + i] != stop[i])
            {
                return false;
            }
        }

        return true;
    }

    private string Emit(int safe)
    {
        if (safe <= emitted)
        {
            return "";
        }

        string delta = clean.ToString(emitted, safe - emitted);
        emitted = safe;
        return delta;
    }

    private string EmitFinal(string text)
    {
        final = text;
        string delta = text.Length > emitted ? text[emitted..] : "";
        emitted = text.Length;
        return delta;
    }
}
