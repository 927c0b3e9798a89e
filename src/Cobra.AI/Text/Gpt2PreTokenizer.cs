using System.Buffers;
using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Cobra.AI.Text;

/// <summary>
/// Splits text the way Hugging Face tokenizers does for a GPT-2 style byte-level BPE: first the added
/// tokens (leftmost, longest first), then each stretch between them with the GPT-2 pattern
/// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c>.
/// </summary>
/// <remarks>
/// Written by hand instead of using <see cref="RegexPreTokenizer"/> for two reasons. .NET regexes
/// classify UTF-16 code units, so a letter outside the BMP (CJK Extension B, mathematical letters)
/// fails <c>\p{L}</c> and "a𠀀b" would split into three pieces where Hugging Face keeps one. And
/// RegexPreTokenizer matches added tokens by alternation order, not leftmost-longest.
/// Each stretch between added tokens is matched on its own, so lookahead never crosses an added token.
/// </remarks>
internal sealed class Gpt2PreTokenizer : PreTokenizer
{
    private static readonly string[] Contractions = ["s", "t", "re", "ve", "m", "ll", "d"];

    // Longest first, so that the first one that matches at a position is the longest there.
    private readonly string[] _addedTokens;
    private readonly SearchValues<char> _addedTokenStarts;

    /// <summary>Creates a pre-tokenizer that keeps <paramref name="addedTokens"/> intact.</summary>
    /// <param name="addedTokens">Contents of tokenizer.json's added tokens.</param>
    public Gpt2PreTokenizer(IEnumerable<string> addedTokens)
    {
        ArgumentNullException.ThrowIfNull(addedTokens);
        _addedTokens = addedTokens.Where(t => t.Length > 0).OrderByDescending(t => t.Length).ToArray();
        _addedTokenStarts = SearchValues.Create(_addedTokens.Select(t => t[0]).Distinct().ToArray());
    }

    /// <summary>Splits <paramref name="text"/> into pre-tokens.</summary>
    /// <param name="text">Normalised text.</param>
    /// <returns>Offset and length of each piece, in order.</returns>
    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) =>
        text is null ? [] : PreTokenize(text.AsSpan());

    /// <summary>Splits <paramref name="text"/> into pre-tokens.</summary>
    /// <param name="text">Normalised text.</param>
    /// <returns>Offset and length of each piece, in order.</returns>
    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text)
    {
        var pieces = new List<(int Offset, int Length)>();
        int segmentStart = 0;
        int searchFrom = 0;
        while (searchFrom < text.Length)
        {
            int relative = text[searchFrom..].IndexOfAny(_addedTokenStarts);
            if (relative < 0)
            {
                break;
            }

            int at = searchFrom + relative;
            int length = AddedTokenLengthAt(text, at);
            if (length == 0)
            {
                searchFrom = at + 1;
                continue;
            }

            SplitSegment(text, segmentStart, at, pieces);
            pieces.Add((at, length));
            segmentStart = searchFrom = at + length;
        }

        SplitSegment(text, segmentStart, text.Length, pieces);
        return pieces;
    }

    private int AddedTokenLengthAt(ReadOnlySpan<char> text, int at)
    {
        foreach (string token in _addedTokens)
        {
            if (text[at..].StartsWith(token, StringComparison.Ordinal))
            {
                return token.Length;
            }
        }

        return 0;
    }

    private static void SplitSegment(ReadOnlySpan<char> text, int start, int end, List<(int Offset, int Length)> pieces)
    {
        ReadOnlySpan<char> segment = text[..end];
        int i = start;
        while (i < end)
        {
            int length = MatchAt(segment, i);
            pieces.Add((i, length));
            i += length;
        }
    }

    // Length of the GPT-2 pattern's match at position i; the alternatives are tried in pattern order.
    private static int MatchAt(ReadOnlySpan<char> s, int i)
    {
        if (s[i] == '\'')
        {
            foreach (string suffix in Contractions)
            {
                if (s[(i + 1)..].StartsWith(suffix, StringComparison.Ordinal))
                {
                    return 1 + suffix.Length;
                }
            }
        }

        int afterSpace = s[i] == ' ' ? i + 1 : i;
        Kind kind = afterSpace < s.Length ? KindAt(s, afterSpace) : Kind.Space;
        if (kind != Kind.Space)
        {
            // " ?\p{L}+", " ?\p{N}+" and " ?[^\s\p{L}\p{N}]+" all take a run of one kind after an optional space.
            int j = afterSpace;
            while (j < s.Length && KindAt(s, j) == kind)
            {
                j += RuneLength(s, j);
            }

            return j - i;
        }

        // "\s+(?!\S)" backs off one character when the run is followed by a non-space; "\s+" takes the rest.
        int end = i;
        while (end < s.Length && KindAt(s, end) == Kind.Space)
        {
            end += RuneLength(s, end);
        }

        int run = end - i;
        return end < s.Length && run > 1 ? run - 1 : run;
    }

    private enum Kind
    {
        Space,
        Letter,
        Number,
        Other,
    }

    private static Kind KindAt(ReadOnlySpan<char> s, int i)
    {
        if (Rune.DecodeFromUtf16(s[i..], out Rune rune, out _) != OperationStatus.Done)
        {
            return Kind.Other;
        }

        if (Rune.IsWhiteSpace(rune))
        {
            return Kind.Space;
        }

        return Rune.GetUnicodeCategory(rune) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Kind.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Kind.Number,
            _ => Kind.Other,
        };
    }

    private static int RuneLength(ReadOnlySpan<char> s, int i) =>
        Rune.DecodeFromUtf16(s[i..], out _, out int consumed) == OperationStatus.Done ? consumed : 1;
}
