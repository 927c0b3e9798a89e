namespace Cobra.AI.Text;

/// <summary>
/// GPT-2's <c>bytes_to_unicode()</c> table, in reverse: byte-level BPE vocabularies spell every byte as a
/// printable character (space is 'Ġ', newline 'Ċ'), and decoding maps those characters back to bytes.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly Dictionary<char, byte> CharToByte = Build();

    /// <summary>
    /// The bytes a vocabulary token stands for, as Hugging Face's ByteLevel decoder computes them: the
    /// mapped bytes when every character is in the alphabet, otherwise the token's own UTF-8 bytes
    /// (this is how added tokens such as runs of plain spaces decode).
    /// </summary>
    /// <param name="token">The token as written in tokenizer.json.</param>
    /// <returns>The token's bytes.</returns>
    public static byte[] TokenToBytes(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!CharToByte.TryGetValue(token[i], out bytes[i]))
            {
                return System.Text.Encoding.UTF8.GetBytes(token);
            }
        }

        return bytes;
    }

    private static Dictionary<char, byte> Build()
    {
        // Printable Latin-1 bytes keep their own code point; the other 68 bytes take U+0100, U+0101, ... in byte order.
        var map = new Dictionary<char, byte>(256);
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[(char)(printable ? b : next++)] = (byte)b;
        }

        return map;
    }
}
