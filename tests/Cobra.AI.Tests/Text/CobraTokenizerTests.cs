using System.Text;
using System.Text.Json.Nodes;
using Cobra.AI.Text;
using Xunit;

namespace Cobra.AI.Tests.Text;

public sealed class CobraTokenizerTests
{
    public static TheoryData<int> ManifestCaseIndices => TextFixtures.Indices(TextFixtures.ManifestCases.Length);

    [Theory]
    [MemberData(nameof(ManifestCaseIndices))]
    public void Greedy_ids_decode_to_what_upstream_generate_returns(int index)
    {
        var c = TextFixtures.ManifestCases[index];
        int[] ids = TextFixtures.Ints(c.GetProperty("greedy_ids"));

        Assert.Equal(c.GetProperty("decoded_text_tokenizers").GetString(), TextFixtures.Tiny.Decode(ids, skipSpecialTokens: true));
        Assert.Equal(c.GetProperty("decoded_text_cobra_generate").GetString(), TextFixtures.Tiny.DecodeForOutput(ids));
    }

    [Fact]
    public void No_bos_is_added()
    {
        Assert.NotEqual(0, TextFixtures.NeoX.Encode("Testing 123")[0]);
        Assert.NotEqual(0, TextFixtures.Tiny.Encode("Testing 123")[0]);
        Assert.Empty(TextFixtures.NeoX.Encode(string.Empty));
    }

    [Fact]
    public void Ids_and_flags_of_the_neox_tokenizer()
    {
        CobraTokenizer t = TextFixtures.NeoX;

        Assert.Equal(0, t.EosTokenId);
        Assert.Equal(50277, t.VocabularySize);
        Assert.True(t.IsSpecial(0));
        Assert.True(t.IsSpecial(1));
        Assert.False(t.IsSpecial(50276)); // two spaces: an added token, but special: false
        Assert.False(t.IsSpecial(12092));
        Assert.False(t.IsSpecial(-1));
        Assert.Equal("  ", t.Decode([50276], skipSpecialTokens: true));
    }

    [Fact]
    public void Tokenizer_config_next_to_the_file_is_read()
    {
        // tiny-a's config says clean_up_tokenization_spaces true and model_max_length 1e30 (transformers' "no limit").
        Assert.True(TextFixtures.Tiny.CleanUpTokenizationSpaces);
        Assert.Null(TextFixtures.Tiny.ModelMaxLength);

        using var dir = new TempDirectory();
        string path = dir.CopyTinyTokenizer();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"), """{"clean_up_tokenization_spaces": false, "model_max_length": 2048}""");
        CobraTokenizer t = CobraTokenizer.FromFile(path);

        Assert.False(t.CleanUpTokenizationSpaces);
        Assert.Equal(2048, t.ModelMaxLength);
        int[] ids = [.. t.Encode(" Yes , I don 't !")];
        Assert.Equal("Yes , I don 't !", t.DecodeForOutput(ids));
    }

    [Fact]
    public void Output_decoding_cleans_up_spaces_like_transformers_then_strips()
    {
        CobraTokenizer t = TextFixtures.NeoX;
        int[] ids = [.. t.Encode("\n Hello , world ! I 'm sure you 're fine . It 's what we 've said ? Don n't ' quote ' <|endoftext|>")];

        Assert.Equal("Hello, world! I'm sure you're fine. It's what we've said? Donn't'quote'", t.DecodeForOutput(ids));
    }

    [Fact]
    public void Clean_up_replacements_apply_in_transformers_order()
    {
        Assert.Equal("a.b?c!d,e'fn't'm's've're", CobraTokenizer.CleanUpTokenization("a .b ?c !d ,e ' f n't 'm 's 've 're"));
        Assert.Equal("no change", CobraTokenizer.CleanUpTokenization("no change"));
    }

    [Fact]
    public void Token_bytes_join_into_utf8_that_single_tokens_may_split()
    {
        CobraTokenizer t = TextFixtures.NeoX;
        int[] ids = [.. t.Encode("😀")];
        Assert.True(ids.Length > 1); // the emoji's four bytes span several tokens

        byte[] joined = ids.SelectMany(t.GetTokenBytes).ToArray();

        Assert.Equal(Encoding.UTF8.GetBytes("😀"), joined);
        Assert.Equal("\uFFFD", t.Decode(ids[..1], skipSpecialTokens: false));
        Assert.Equal(Encoding.UTF8.GetBytes("<|endoftext|>"), t.GetTokenBytes(0));
        Assert.Equal(Encoding.UTF8.GetBytes(" the"), t.GetTokenBytes(t.Encode(" the").Single()));
    }

    [Fact]
    public void Out_of_range_ids_are_rejected_with_the_id_and_vocabulary_size()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => TextFixtures.Tiny.Decode([5, 581], skipSpecialTokens: false));
        Assert.Contains("581", ex.Message, StringComparison.Ordinal);
        Assert.Contains("vocabulary of 581", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => TextFixtures.Tiny.Decode([-1], skipSpecialTokens: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => TextFixtures.Tiny.GetTokenBytes(1000));
    }

    [Fact]
    public void Merges_as_pairs_give_the_same_ids_as_merges_as_strings()
    {
        using var dir = new TempDirectory();
        string path = dir.CopyTinyTokenizer(json =>
        {
            var merges = json["model"]!["merges"]!.AsArray();
            var pairs = new JsonArray(merges.Select(m => (JsonNode)new JsonArray([.. m!.GetValue<string>().Split(' ').Select(p => (JsonNode)p)])).ToArray());
            json["model"]!["merges"] = pairs;
        });
        CobraTokenizer t = CobraTokenizer.FromFile(path);

        foreach (var c in TextFixtures.TinyCases)
        {
            Assert.Equal(TextFixtures.Ints(c.GetProperty("ids")), t.Encode(c.GetProperty("text").GetString()!));
        }
    }

    [Fact]
    public void Normalizer_may_be_null_or_a_sequence_of_nfc()
    {
        const string Composed = "\u00E9", Decomposed = "e\u0301";
        CobraTokenizer nfc = TextFixtures.Tiny;
        Assert.Equal(nfc.Encode(Composed), nfc.Encode(Decomposed));

        using var dir = new TempDirectory();
        CobraTokenizer none = CobraTokenizer.FromFile(dir.CopyTinyTokenizer(json => json["normalizer"] = null, "none"));
        Assert.NotEqual(none.Encode(Composed), none.Encode(Decomposed));

        CobraTokenizer sequence = CobraTokenizer.FromFile(dir.CopyTinyTokenizer(
            json => json["normalizer"] = JsonNode.Parse("""{"type": "Sequence", "normalizers": [{"type": "NFC"}]}"""), "sequence"));
        Assert.Equal(sequence.Encode(Composed), sequence.Encode(Decomposed));
    }

    [Theory]
    [InlineData("e\u0301", "\u00E9")]
    [InlineData("\u212B", "\u00C5")] // singleton decomposition
    [InlineData("\u0958", "\u0915\u093C")] // composition exclusion stays decomposed
    [InlineData("\u0344", "\u0308\u0301")] // non-starter decomposition
    [InlineData("a\u0301\u0328", "\u0105\u0301")] // reordered by combining class, then composed
    [InlineData("q\u0307\u0323", "q\u0323\u0307")]
    [InlineData("\u1100\u1161\u11A8", "\uAC01")] // Hangul L V T
    [InlineData("\U0001D15E", "\U0001D157\U0001D165")] // excluded, outside the BMP
    [InlineData("plain ASCII", "plain ASCII")]
    public void Nfc_matches_python_unicodedata(string input, string expected)
    {
        Assert.Equal(expected, NfcNormalizer.Instance.Normalize(input));
    }

    [Fact]
    public void Letters_outside_the_bmp_stay_in_one_pretoken_like_hugging_face()
    {
        // "\p{L}+" must see U+20000 (a CJK letter) as a letter, not as two surrogate code units.
        var pre = new Gpt2PreTokenizer(["<|endoftext|>", "  "]);
        const string Text = "a\U00020000b  c<|endoftext|>d";

        string[] pieces = pre.PreTokenize(Text).Select(p => Text.Substring(p.Offset, p.Length)).ToArray();

        Assert.Equal(["a\U00020000b", "  ", "c", "<|endoftext|>", "d"], pieces);
    }

    [Fact]
    public void Missing_file_names_the_path()
    {
        string path = Path.Combine(Path.GetTempPath(), "cobra-no-such-dir", "tokenizer.json");

        var ex = Assert.Throws<FileNotFoundException>(() => CobraTokenizer.FromFile(path));

        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Text_that_is_not_json_is_invalid_data()
    {
        using var dir = new TempDirectory();
        string path = Path.Combine(dir.Path, "tokenizer.json");
        File.WriteAllText(path, "this is not json");

        var ex = Assert.Throws<InvalidDataException>(() => CobraTokenizer.FromFile(path));

        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
        Assert.Contains("not valid JSON", ex.Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, string> BadShapes => new()
    {
        { """{"model": {"type": "WordPiece"}}""", "model.type" },
        { "model.vocab", "model.vocab" },
        { "model.merges", "model.merges" },
        { """{"pre_tokenizer": {"type": "Whitespace"}}""", "pre_tokenizer" },
        { """{"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true}}""", "add_prefix_space" },
        { """{"decoder": {"type": "WordPiece"}}""", "decoder" },
        { "decoder", "decoder" },
        { """{"normalizer": {"type": "Lowercase"}}""", "normalizer" },
        { """{"post_processor": {"type": "TemplateProcessing"}}""", "post_processor" },
    };

    [Theory]
    [MemberData(nameof(BadShapes))]
    public void Unknown_shape_is_invalid_data_naming_file_and_problem(string change, string expectedInMessage)
    {
        using var dir = new TempDirectory();
        string path = dir.CopyTinyTokenizer(json =>
        {
            if (change.StartsWith('{'))
            {
                // Replace the named top-level objects (model.type only, the rest of model is kept).
                foreach ((string key, JsonNode? value) in JsonNode.Parse(change)!.AsObject().ToList())
                {
                    if (key == "model")
                    {
                        json["model"]!["type"] = value!["type"]!.GetValue<string>();
                    }
                    else
                    {
                        json[key] = value?.DeepClone();
                    }
                }
            }
            else
            {
                // Remove the dotted property.
                string[] parts = change.Split('.');
                JsonObject parent = parts.Length == 1 ? json : json[parts[0]]!.AsObject();
                parent.Remove(parts[^1]);
            }
        });

        var ex = Assert.Throws<InvalidDataException>(() => CobraTokenizer.FromFile(path));

        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
        Assert.Contains(expectedInMessage, ex.Message, StringComparison.Ordinal);
    }

    private sealed class TempDirectory : IDisposable
    {
        public TempDirectory()
        {
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "cobra-tokenizer-tests-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(Path);
        }

        public string Path { get; }

        /// <summary>Writes tiny-a's tokenizer.json, optionally changed, into a subfolder and returns its path.</summary>
        public string CopyTinyTokenizer(Action<JsonObject>? change = null, string subfolder = "copy")
        {
            var json = JsonNode.Parse(File.ReadAllText(TextFixtures.TinyTokenizerPath))!.AsObject();
            change?.Invoke(json);
            string folder = subfolder == "copy" ? Path : System.IO.Path.Combine(Path, subfolder);
            Directory.CreateDirectory(folder);
            string path = System.IO.Path.Combine(folder, "tokenizer.json");
            File.WriteAllText(path, json.ToJsonString());
            return path;
        }

        public void Dispose() => Directory.Delete(Path, recursive: true);
    }
}
