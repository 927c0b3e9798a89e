using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Cobra.AI.Text;

namespace Cobra.AI.Generation.StateStore;

/// <summary>
/// Store keys: <c>cobra:state:v{version}:{model}:{image}:{prefix}</c>, with the first 8 bytes of the model identity,
/// 8 bytes of SHA-256 of the image key (<c>text</c> without an image) and 16 bytes of SHA-256 of image key + token
/// prefix, all hex. A collision cannot load a wrong state (values carry their image key and tokens); SHA-256 keeps
/// a client from crafting a prompt whose key evicts another conversation's snapshot.
/// </summary>
internal static class StateStoreKeys
{
    /// <summary>The key of the state after the first <paramref name="length"/> tokens of <paramref name="tokens"/>.</summary>
    public static string For(ReadOnlySpan<byte> modelHash, string? imageKey, IReadOnlyList<int> tokens, int length)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, tokens.Count);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] image = imageKey is null ? [] : Encoding.UTF8.GetBytes(imageKey);
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(word, imageKey is null ? -1 : image.Length);
        sha.AppendData(word);
        sha.AppendData(image);
        var buffer = new byte[4 * length];
        for (int i = 0; i < length; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(4 * i), tokens[i]);
        }

        sha.AppendData(buffer);
        string prefix = Convert.ToHexStringLower(sha.GetHashAndReset().AsSpan(0, 16));
        string imagePart = imageKey is null ? "text" : Convert.ToHexStringLower(SHA256.HashData(image).AsSpan(0, 8));
        return $"cobra:state:v{StateSnapshotCodec.FormatVersion}:{Convert.ToHexStringLower(modelHash[..8])}:{imagePart}:{prefix}";
    }
}

/// <summary>
/// Where a Zephyr prompt can have a snapshot in the store: the engine stores the state after a whole prompt (it
/// ends with <c>&lt;|endoftext|&gt;\n&lt;|assistant|&gt;\n</c>), after an answer that ended with end-of-text (the
/// state before that token), and after an image plus the user header every first turn starts with (for new
/// conversations about that image). In a later prompt these are the positions right after each assistant header,
/// right before the end-of-text that closes each assistant turn, and right after the leading user header when
/// there is an image. The token runs are context-free, since the tokenizer splits the text at end-of-text.
/// </summary>
internal sealed class PromptBoundaries
{
    private readonly int endOfText;
    private readonly int[] assistantHeader;
    private readonly int[] userHeader;

    /// <summary>
    /// Boundaries given the end-of-text id, the tokens of <c>&lt;|endoftext|&gt;\n&lt;|assistant|&gt;\n</c> and those every
    /// first turn starts with (<c>&lt;|user|&gt;\n</c>; empty for none).
    /// </summary>
    public PromptBoundaries(int endOfText, IReadOnlyList<int> assistantHeader, IReadOnlyList<int>? userHeader = null)
    {
        ArgumentNullException.ThrowIfNull(assistantHeader);
        ArgumentOutOfRangeException.ThrowIfZero(assistantHeader.Count, nameof(assistantHeader));
        this.endOfText = endOfText;
        this.assistantHeader = [.. assistantHeader];
        this.userHeader = [.. userHeader ?? []];
    }

    /// <summary>The boundaries of Cobra's Zephyr prompt for <paramref name="tokenizer"/>.</summary>
    public static PromptBoundaries ForZephyr(CobraTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new PromptBoundaries(tokenizer.EosTokenId, tokenizer.Encode("<|endoftext|>\n<|assistant|>\n"), ZephyrPromptBuilder.SharedFirstTurnPrefix(tokenizer));
    }

    /// <summary>Candidate prefix lengths of <paramref name="ids"/> (strict prefixes), longest first.</summary>
    public IEnumerable<int> Candidates(IReadOnlyList<int> ids, bool hasImage)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var found = new List<int>();
        if (hasImage && userHeader.Length > 0 && userHeader.Length < ids.Count && ids.Take(userHeader.Length).SequenceEqual(userHeader))
        {
            found.Add(userHeader.Length);                                        // the image and the first user header
        }

        bool inAnswer = false;
        for (int p = 0; p < ids.Count; p++)
        {
            if (ids[p] == endOfText && inAnswer)
            {
                found.Add(p);                                                    // the state before the answer's end-of-text
                inAnswer = false;
            }

            int end = p + assistantHeader.Length;
            if (end < ids.Count && Matches(ids, p))
            {
                found.Add(end);                                                  // the state after a whole prompt
                inAnswer = true;
                p = end - 1;
            }
        }

        for (int i = found.Count - 1; i >= 0; i--)
        {
            if (found[i] > 0)
            {
                yield return found[i];
            }
        }
    }

    private bool Matches(IReadOnlyList<int> ids, int start)
    {
        for (int i = 0; i < assistantHeader.Length; i++)
        {
            if (ids[start + i] != assistantHeader[i])
            {
                return false;
            }
        }

        return true;
    }
}
