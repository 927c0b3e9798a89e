using System.Text;
using Microsoft.ML.Tokenizers;

namespace Cobra.AI.Text;

/// <summary>
/// Unicode NFC in managed code, as the GPT-NeoX tokenizer's <c>normalizer: NFC</c> asks.
/// </summary>
/// <remarks>
/// <see cref="string.Normalize()"/> cannot be used: under InvariantGlobalization (set for this
/// project) it returns the text unchanged, so "e\u0301" would tokenize differently from Hugging Face.
/// The tables come from <see cref="NfcData"/>; Hangul syllables are composed algorithmically.
/// </remarks>
internal sealed class NfcNormalizer : Normalizer
{
    private const int HangulSBase = 0xAC00, HangulLBase = 0x1100, HangulVBase = 0x1161, HangulTBase = 0x11A7;
    private const int HangulLCount = 19, HangulVCount = 21, HangulTCount = 28;
    private const int HangulNCount = HangulVCount * HangulTCount, HangulSCount = HangulLCount * HangulNCount;

    // Below U+0300 every code point is a starter that NFC leaves alone and that nothing earlier composes into.
    private const char FirstCharNeedingWork = '\u0300';

    private static readonly Dictionary<int, int[]> Decompositions = BuildDecompositions();
    private static readonly Dictionary<int, byte> CombiningClasses = BuildCombiningClasses();
    private static readonly Dictionary<long, int> Compositions = BuildCompositions();

    /// <summary>The shared instance; the normalizer has no state.</summary>
    public static NfcNormalizer Instance { get; } = new();

    /// <summary>Returns the NFC form of <paramref name="original"/>.</summary>
    /// <param name="original">Text to normalise.</param>
    /// <returns>The composed text.</returns>
    public override string Normalize(string original)
    {
        ArgumentNullException.ThrowIfNull(original);
        return NeedsWork(original) ? Compose(original) : original;
    }

    /// <summary>Returns the NFC form of <paramref name="original"/>.</summary>
    /// <param name="original">Text to normalise.</param>
    /// <returns>The composed text.</returns>
    public override string Normalize(ReadOnlySpan<char> original) =>
        NeedsWork(original) ? Compose(original) : original.ToString();

    private static bool NeedsWork(ReadOnlySpan<char> text) =>
        text.IndexOfAnyInRange(FirstCharNeedingWork, char.MaxValue) >= 0;

    private static string Compose(ReadOnlySpan<char> text)
    {
        var codePoints = new List<int>(text.Length);
        foreach (Rune rune in text.EnumerateRunes())
        {
            Decompose(rune.Value, codePoints);
        }

        ReorderCanonically(codePoints);
        List<int> composed = ComposeCanonically(codePoints);

        var builder = new StringBuilder(text.Length);
        foreach (int cp in composed)
        {
            builder.Append(new Rune(cp).ToString());
        }

        return builder.ToString();
    }

    private static void Decompose(int cp, List<int> output)
    {
        int sIndex = cp - HangulSBase;
        if (sIndex is >= 0 and < HangulSCount)
        {
            output.Add(HangulLBase + (sIndex / HangulNCount));
            output.Add(HangulVBase + (sIndex % HangulNCount / HangulTCount));
            if (sIndex % HangulTCount != 0)
            {
                output.Add(HangulTBase + (sIndex % HangulTCount));
            }
        }
        else if (Decompositions.TryGetValue(cp, out int[]? parts))
        {
            output.AddRange(parts);
        }
        else
        {
            output.Add(cp);
        }
    }

    private static int CombiningClass(int cp) => CombiningClasses.TryGetValue(cp, out byte ccc) ? ccc : 0;

    // Stable sort of each run of non-starters by combining class (insertion sort: runs are short).
    private static void ReorderCanonically(List<int> cps)
    {
        for (int i = 1; i < cps.Count; i++)
        {
            int ccc = CombiningClass(cps[i]);
            if (ccc == 0)
            {
                continue;
            }

            int j = i;
            while (j > 0 && CombiningClass(cps[j - 1]) > ccc)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                j--;
            }
        }
    }

    private static List<int> ComposeCanonically(List<int> cps)
    {
        var output = new List<int>(cps.Count);
        int starterIndex = -1;
        int lastClass = 0;
        foreach (int cp in cps)
        {
            int ccc = CombiningClass(cp);
            if (starterIndex >= 0)
            {
                // A mark is blocked from the starter by an earlier character of the same or higher class.
                bool adjacent = output.Count - 1 == starterIndex;
                bool blocked = !adjacent && (lastClass == 0 || lastClass >= ccc);
                if (!blocked && TryCompose(output[starterIndex], cp, out int composite))
                {
                    output[starterIndex] = composite;
                    continue;
                }
            }

            if (ccc == 0)
            {
                starterIndex = output.Count;
            }

            lastClass = ccc;
            output.Add(cp);
        }

        return output;
    }

    private static bool TryCompose(int first, int second, out int composite)
    {
        int lIndex = first - HangulLBase, vIndex = second - HangulVBase;
        if (lIndex is >= 0 and < HangulLCount && vIndex is >= 0 and < HangulVCount)
        {
            composite = HangulSBase + (((lIndex * HangulVCount) + vIndex) * HangulTCount);
            return true;
        }

        int sIndex = first - HangulSBase, tIndex = second - HangulTBase;
        if (sIndex is >= 0 and < HangulSCount && sIndex % HangulTCount == 0 && tIndex is > 0 and < HangulTCount)
        {
            composite = first + tIndex;
            return true;
        }

        return Compositions.TryGetValue(PairKey(first, second), out composite);
    }

    private static long PairKey(int first, int second) => ((long)first << 21) | (uint)second;

    private static Dictionary<int, int[]> BuildDecompositions()
    {
        int[] data = NfcData.Decompositions;
        var map = new Dictionary<int, int[]>();
        for (int i = 0; i < data.Length;)
        {
            int cp = data[i], count = data[i + 1];
            map[cp] = data.AsSpan(i + 2, count).ToArray();
            i += 2 + count;
        }

        return map;
    }

    private static Dictionary<int, byte> BuildCombiningClasses()
    {
        int[] data = NfcData.CombiningClassRanges;
        var map = new Dictionary<int, byte>();
        for (int i = 0; i < data.Length; i += 3)
        {
            for (int cp = data[i]; cp <= data[i + 1]; cp++)
            {
                map[cp] = (byte)data[i + 2];
            }
        }

        return map;
    }

    private static Dictionary<long, int> BuildCompositions()
    {
        int[] data = NfcData.Compositions;
        var map = new Dictionary<long, int>(data.Length / 3);
        for (int i = 0; i < data.Length; i += 3)
        {
            map[PairKey(data[i], data[i + 1])] = data[i + 2];
        }

        return map;
    }
}
