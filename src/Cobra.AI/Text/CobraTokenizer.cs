using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace Cobra.AI.Text;

/// <summary>
/// The GPT-NeoX-20B byte-level BPE tokenizer of Cobra's LLM, read from a Hugging Face tokenizer.json and
/// reproducing Hugging Face tokenizers' ids and decoded text exactly.
/// </summary>
/// <remarks>
/// Encoding runs on ML.Tokenizers' <see cref="BpeTokenizer"/> with a managed NFC normaliser and a
/// hand-written GPT-2 pre-tokenizer. Decoding is done here from per-token bytes, because Hugging Face
/// joins the bytes of all tokens and only then replaces invalid UTF-8 with U+FFFD, which is also what a
/// streaming detokeniser needs (<see cref="GetTokenBytes"/>).
/// </remarks>
internal sealed class CobraTokenizer
{
    // transformers' clean_up_tokenization, in its order.
    private static readonly (string From, string To)[] CleanUpReplacements =
    [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
        (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ];

    private readonly BpeTokenizer _bpe;
    private readonly byte[][] _tokenBytes;
    private readonly bool[] _isSpecial;

    private CobraTokenizer(TokenizerDefinition definition, bool cleanUpTokenizationSpaces, int? modelMaxLength)
    {
        _tokenBytes = definition.Tokens.Select(ByteLevelAlphabet.TokenToBytes).ToArray();
        _isSpecial = definition.IsSpecial;
        EosTokenId = definition.EndOfTextId;
        CleanUpTokenizationSpaces = cleanUpTokenizationSpaces;
        ModelMaxLength = modelMaxLength;
        _bpe = BpeTokenizer.Create(new BpeOptions(definition.Vocabulary)
        {
            Merges = definition.Merges,
            SpecialTokens = definition.AddedTokens,
            ByteLevel = true,
            PreTokenizer = new Gpt2PreTokenizer(definition.AddedTokens.Keys),
            Normalizer = definition.Nfc ? NfcNormalizer.Instance : null,
        });
    }

    /// <summary>Id of <c>&lt;|endoftext|&gt;</c>: end of sequence (and bos, unk and pad) for Cobra; 0 for GPT-NeoX.</summary>
    public int EosTokenId { get; }

    /// <summary>Number of token ids, model vocabulary and added tokens together (50,277 for GPT-NeoX-20B).</summary>
    public int VocabularySize => _tokenBytes.Length;

    /// <summary>Whether <see cref="DecodeForOutput"/> applies transformers' <c>clean_up_tokenization_spaces</c>.</summary>
    public bool CleanUpTokenizationSpaces { get; }

    /// <summary>tokenizer_config.json's <c>model_max_length</c>, or null when absent or beyond int (transformers' "no limit").</summary>
    public int? ModelMaxLength { get; }

    /// <summary>
    /// Loads a tokenizer.json, and the tokenizer_config.json next to it when there is one.
    /// </summary>
    /// <param name="tokenizerJsonPath">Path of tokenizer.json.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">A file is not a tokenizer of the supported shape; the message names the file and the problem.</exception>
    public static CobraTokenizer FromFile(string tokenizerJsonPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(tokenizerJsonPath);
        string fullPath = Path.GetFullPath(tokenizerJsonPath);
        TokenizerDefinition definition = TokenizerDefinition.Read(fullPath);

        // transformers defaults clean_up_tokenization_spaces to true when the config does not say.
        bool cleanUp = true;
        int? maxLength = null;
        string configPath = Path.Combine(Path.GetDirectoryName(fullPath)!, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            (cleanUp, maxLength) = ReadConfig(configPath);
        }

        return new CobraTokenizer(definition, cleanUp, maxLength);
    }

    /// <summary>
    /// Encodes text as Hugging Face's <c>tokenizer(text)</c> does for this tokenizer: added tokens such as
    /// <c>&lt;|endoftext|&gt;</c> in the text become their ids, and no BOS or EOS is ever added.
    /// </summary>
    /// <param name="text">Text to encode.</param>
    /// <returns>Token ids.</returns>
    public IReadOnlyList<int> Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _bpe.EncodeToIds(text);
    }

    /// <summary>Decodes ids exactly as Hugging Face tokenizers' <c>decode(ids, skip_special_tokens)</c>.</summary>
    /// <param name="ids">Token ids.</param>
    /// <param name="skipSpecialTokens">Drop tokens marked <c>special</c> (not the space-run added tokens).</param>
    /// <returns>The text; invalid UTF-8 becomes U+FFFD.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (skipSpecialTokens && IsSpecial(id))
            {
                continue;
            }

            bytes.AddRange(GetTokenBytes(id));
        }

        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>
    /// What upstream Cobra's <c>generate()</c> returns: <c>decode(ids, skip_special_tokens=True)</c>, then
    /// transformers' clean-up of spaces before punctuation and contractions (when enabled), then Python's <c>strip()</c>.
    /// </summary>
    /// <param name="ids">Generated token ids (ids past the vocabulary, i.e. padding rows, are skipped).</param>
    /// <returns>The answer text.</returns>
    public string DecodeForOutput(IEnumerable<int> ids)
    {
        // The model's logits cover the vocabulary padded to a multiple of 8; Hugging Face's decoder skips ids it
        // has no token for, so the padding rows decode to nothing, as upstream.
        string text = Decode(ids.Where(id => (uint)id < (uint)VocabularySize), skipSpecialTokens: true);
        if (CleanUpTokenizationSpaces)
        {
            text = CleanUpTokenization(text);
        }

        return PythonString.Strip(text);
    }

    /// <summary>transformers' <c>clean_up_tokenization</c>: removes spaces before punctuation and in English contractions.</summary>
    /// <param name="text">Decoded text.</param>
    /// <returns>The cleaned text.</returns>
    public static string CleanUpTokenization(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        foreach ((string from, string to) in CleanUpReplacements)
        {
            text = text.Replace(from, to, StringComparison.Ordinal);
        }

        return text;
    }

    /// <summary>Whether the id is an added token marked <c>special: true</c> (dropped by skipSpecialTokens).</summary>
    /// <param name="id">Token id.</param>
    /// <returns>True for special tokens; false for all others, including out-of-range ids.</returns>
    public bool IsSpecial(int id) => (uint)id < (uint)_isSpecial.Length && _isSpecial[id];

    /// <summary>
    /// The UTF-8 bytes a token contributes to decoded text. A token may hold part of a multi-byte
    /// character, so an incremental detokeniser must join bytes before turning them into text.
    /// </summary>
    /// <param name="id">Token id.</param>
    /// <returns>A fresh copy of the token's bytes.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The id is outside the vocabulary.</exception>
    public byte[] GetTokenBytes(int id)
    {
        if ((uint)id >= (uint)_tokenBytes.Length)
        {
            throw new ArgumentOutOfRangeException(
                nameof(id), id, $"Token id {id} is outside the vocabulary of {_tokenBytes.Length} tokens (valid ids 0..{_tokenBytes.Length - 1}).");
        }

        return (byte[])_tokenBytes[id].Clone();
    }

    /// <summary>The bytes of a valid token id without a copy (hot paths: detokenising, constraint masks).</summary>
    internal ReadOnlySpan<byte> TokenBytesUnchecked(int id) => _tokenBytes[id];

    /// <summary>The strings whose leading space the clean-up removes (each starts with a space).</summary>
    internal static IEnumerable<string> CleanUpPatterns => CleanUpReplacements.Select(r => r.From);

    private static (bool CleanUp, int? MaxLength) ReadConfig(string path)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{path}: expected a JSON object.");
            }

            bool cleanUp = true;
            if (root.TryGetProperty("clean_up_tokenization_spaces", out JsonElement cleanUpElement))
            {
                cleanUp = cleanUpElement.ValueKind switch
                {
                    JsonValueKind.True => true,
                    JsonValueKind.False => false,
                    _ => throw new InvalidDataException($"{path}: clean_up_tokenization_spaces must be true or false."),
                };
            }

            int? maxLength = null;
            if (root.TryGetProperty("model_max_length", out JsonElement maxElement) && maxElement.ValueKind == JsonValueKind.Number
                && maxElement.TryGetInt32(out int value) && value > 0)
            {
                maxLength = value;
            }

            return (cleanUp, maxLength);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({ex.Message}).", ex);
        }
    }
}
