using System.Text.Json;

namespace Cobra.AI.Text;

/// <summary>
/// The parts of a Hugging Face tokenizer.json that <see cref="CobraTokenizer"/> uses, checked against
/// the one shape it reproduces: GPT-NeoX's byte-level BPE. Anything else is rejected with a message
/// naming the file and the field, rather than tokenized differently from Hugging Face.
/// </summary>
internal sealed class TokenizerDefinition
{
    private TokenizerDefinition(
        Dictionary<string, int> vocabulary,
        List<string> merges,
        Dictionary<string, int> addedTokens,
        string[] tokens,
        bool[] isSpecial,
        int endOfTextId,
        bool nfc)
    {
        Vocabulary = vocabulary;
        Merges = merges;
        AddedTokens = addedTokens;
        Tokens = tokens;
        IsSpecial = isSpecial;
        EndOfTextId = endOfTextId;
        Nfc = nfc;
    }

    /// <summary>The BPE model's vocabulary (added tokens not included).</summary>
    public Dictionary<string, int> Vocabulary { get; }

    /// <summary>Merges as "left right", in rank order.</summary>
    public List<string> Merges { get; }

    /// <summary>All added tokens, special or not: the text is split on them before BPE.</summary>
    public Dictionary<string, int> AddedTokens { get; }

    /// <summary>Token text by id, for every id from 0 to the vocabulary size.</summary>
    public string[] Tokens { get; }

    /// <summary>By id: whether the token is an added token marked <c>special: true</c>.</summary>
    public bool[] IsSpecial { get; }

    /// <summary>Id of <c>&lt;|endoftext|&gt;</c>.</summary>
    public int EndOfTextId { get; }

    /// <summary>Whether the normalizer is NFC.</summary>
    public bool Nfc { get; }

    /// <summary>Reads and checks a tokenizer.json.</summary>
    /// <param name="path">Full path of the file.</param>
    /// <returns>The definition.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a tokenizer of the supported shape.</exception>
    public static TokenizerDefinition Read(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Tokenizer file not found: {path}", path);
        }

        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
            return Parse(document.RootElement, path);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({ex.Message}).", ex);
        }
    }

    private static TokenizerDefinition Parse(JsonElement root, string path)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(path, "the top level is not a JSON object");
        }

        bool nfc = ReadNormalizer(root, path);
        CheckByteLevel(root, "pre_tokenizer", path, required: true);
        CheckByteLevel(root, "decoder", path, required: true);
        CheckByteLevel(root, "post_processor", path, required: false);

        if (!root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(path, "missing \"model\"");
        }

        string? type = model.TryGetProperty("type", out JsonElement typeElement) ? StringOrNull(typeElement) : null;
        if (type != "BPE")
        {
            throw Invalid(path, $"model.type is \"{type}\", expected \"BPE\"");
        }

        RejectSet(model, "dropout", path);
        RejectSet(model, "continuing_subword_prefix", path);
        RejectSet(model, "end_of_word_suffix", path);

        Dictionary<string, int> vocabulary = ReadVocabulary(model, path);
        List<string> merges = ReadMerges(model, path);
        (Dictionary<string, int> added, HashSet<int> specialIds) = ReadAddedTokens(root, path);

        int size = Math.Max(vocabulary.Values.DefaultIfEmpty(-1).Max(), added.Values.DefaultIfEmpty(-1).Max()) + 1;
        var tokens = new string?[size];
        foreach ((string token, int id) in vocabulary.Concat(added))
        {
            if (tokens[id] is { } existing && existing != token)
            {
                throw Invalid(path, $"id {id} is both \"{existing}\" and \"{token}\"");
            }

            tokens[id] = token;
        }

        int gap = Array.IndexOf(tokens, null);
        if (gap >= 0)
        {
            throw Invalid(path, $"no token has id {gap}, but ids go up to {size - 1}");
        }

        if (!added.TryGetValue("<|endoftext|>", out int endOfText) && !vocabulary.TryGetValue("<|endoftext|>", out endOfText))
        {
            throw Invalid(path, "no <|endoftext|> token");
        }

        bool[] isSpecial = Enumerable.Range(0, size).Select(specialIds.Contains).ToArray();
        return new TokenizerDefinition(vocabulary, merges, added, tokens!, isSpecial, endOfText, nfc);
    }

    private static bool ReadNormalizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("normalizer", out JsonElement normalizer) || normalizer.ValueKind == JsonValueKind.Null)
        {
            return false;
        }

        string? type = TypeOf(normalizer);
        if (type == "NFC")
        {
            return true;
        }

        // A Sequence made only of NFC steps is NFC (applying it twice changes nothing).
        if (type == "Sequence" && normalizer.TryGetProperty("normalizers", out JsonElement steps) && steps.ValueKind == JsonValueKind.Array)
        {
            bool nfc = false;
            foreach (JsonElement step in steps.EnumerateArray())
            {
                if (TypeOf(step) != "NFC")
                {
                    throw Invalid(path, $"normalizer step \"{TypeOf(step)}\" is not supported (only NFC)");
                }

                nfc = true;
            }

            return nfc;
        }

        throw Invalid(path, $"normalizer \"{type}\" is not supported (only NFC, a Sequence of NFC, or null)");
    }

    // Only ByteLevel with add_prefix_space=false and the GPT-2 regex is reproduced; the post-processor may be absent.
    private static void CheckByteLevel(JsonElement root, string name, string path, bool required)
    {
        if (!root.TryGetProperty(name, out JsonElement element) || element.ValueKind == JsonValueKind.Null)
        {
            if (required)
            {
                throw Invalid(path, $"missing {name} (expected ByteLevel)");
            }

            return;
        }

        string? type = TypeOf(element);
        if (type != "ByteLevel")
        {
            throw Invalid(path, $"{name} is \"{type}\", expected ByteLevel");
        }

        // Hugging Face's defaults: add_prefix_space true, use_regex true.
        if (!element.TryGetProperty("add_prefix_space", out JsonElement prefix) || prefix.ValueKind != JsonValueKind.False)
        {
            throw Invalid(path, $"{name} has add_prefix_space other than false");
        }

        if (element.TryGetProperty("use_regex", out JsonElement useRegex) && useRegex.ValueKind != JsonValueKind.True)
        {
            throw Invalid(path, $"{name} has use_regex other than true");
        }
    }

    private static void RejectSet(JsonElement model, string name, string path)
    {
        if (model.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null
            && !(value.ValueKind == JsonValueKind.String && value.GetString()!.Length == 0))
        {
            throw Invalid(path, $"model.{name} is set ({value.GetRawText()}), which is not supported");
        }
    }

    private static Dictionary<string, int> ReadVocabulary(JsonElement model, string path)
    {
        if (!model.TryGetProperty("vocab", out JsonElement vocab) || vocab.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(path, "model.vocab is missing or not an object");
        }

        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty entry in vocab.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
            {
                throw Invalid(path, $"model.vocab[\"{entry.Name}\"] is not a non-negative integer id");
            }

            vocabulary[entry.Name] = id;
        }

        return vocabulary;
    }

    // Merges come as "left right" strings (older files) or as [left, right] pairs (tokenizers 0.20 and later).
    private static List<string> ReadMerges(JsonElement model, string path)
    {
        if (!model.TryGetProperty("merges", out JsonElement mergesElement) || mergesElement.ValueKind != JsonValueKind.Array)
        {
            throw Invalid(path, "model.merges is missing or not an array");
        }

        var merges = new List<string>(mergesElement.GetArrayLength());
        foreach (JsonElement merge in mergesElement.EnumerateArray())
        {
            if (merge.ValueKind == JsonValueKind.String && merge.GetString()!.Split(' ') is [{ Length: > 0 }, { Length: > 0 }])
            {
                merges.Add(merge.GetString()!);
            }
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                && StringOrNull(merge[0]) is { Length: > 0 } left && !left.Contains(' ', StringComparison.Ordinal)
                && StringOrNull(merge[1]) is { Length: > 0 } right && !right.Contains(' ', StringComparison.Ordinal))
            {
                merges.Add($"{left} {right}");
            }
            else
            {
                throw Invalid(path, $"merge {merges.Count} ({merge.GetRawText()}) is neither \"left right\" nor [left, right]");
            }
        }

        return merges;
    }

    private static (Dictionary<string, int> Added, HashSet<int> SpecialIds) ReadAddedTokens(JsonElement root, string path)
    {
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        var specialIds = new HashSet<int>();
        if (!root.TryGetProperty("added_tokens", out JsonElement list) || list.ValueKind == JsonValueKind.Null)
        {
            return (added, specialIds);
        }

        if (list.ValueKind != JsonValueKind.Array)
        {
            throw Invalid(path, "added_tokens is not an array");
        }

        foreach (JsonElement token in list.EnumerateArray())
        {
            if (token.ValueKind != JsonValueKind.Object
                || !token.TryGetProperty("id", out JsonElement idElement) || idElement.ValueKind != JsonValueKind.Number || !idElement.TryGetInt32(out int id) || id < 0
                || !token.TryGetProperty("content", out JsonElement contentElement) || StringOrNull(contentElement) is not { Length: > 0 } content)
            {
                throw Invalid(path, $"added token {token.GetRawText()} has no valid id and content");
            }

            // lstrip/rstrip/single_word change how the text is split around the token; none of the supported files use them.
            foreach (string flag in (string[])["lstrip", "rstrip", "single_word"])
            {
                if (token.TryGetProperty(flag, out JsonElement value) && value.ValueKind == JsonValueKind.True)
                {
                    throw Invalid(path, $"added token \"{content}\" sets {flag}, which is not supported");
                }
            }

            added[content] = id;
            if (token.TryGetProperty("special", out JsonElement special) && special.ValueKind == JsonValueKind.True)
            {
                specialIds.Add(id);
            }
        }

        return (added, specialIds);
    }

    private static string? TypeOf(JsonElement element) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty("type", out JsonElement type) ? StringOrNull(type) : null;

    private static string? StringOrNull(JsonElement element) =>
        element.ValueKind == JsonValueKind.String ? element.GetString() : null;

    private static InvalidDataException Invalid(string path, string problem) =>
        new($"{path}: unsupported tokenizer.json: {problem}.");
}
