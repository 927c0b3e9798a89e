using System.Text.Json;
using Cobra.AI.Text;
using Xunit;

namespace Cobra.AI.Tests.Text;

/// <summary>Paths and parsed JSON of the tokenizer fixtures, loaded once per test run.</summary>
internal static class TextFixtures
{
    public static readonly string NeoXDirectory = Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizer-gpt-neox-20b");
    public static readonly string TinyDirectory = Path.Combine(AppContext.BaseDirectory, "fixtures", "tiny-a");
    public static readonly string NeoXTokenizerPath = Path.Combine(NeoXDirectory, "tokenizer.json");
    public static readonly string TinyTokenizerPath = Path.Combine(TinyDirectory, "hub", "xiuyul", "mamba-2.8b-zephyr", "tokenizer.json");

    private static readonly Lazy<CobraTokenizer> NeoXLazy = new(() => CobraTokenizer.FromFile(NeoXTokenizerPath));
    private static readonly Lazy<CobraTokenizer> TinyLazy = new(() => CobraTokenizer.FromFile(TinyTokenizerPath));
    private static readonly Lazy<JsonElement[]> NeoXCasesLazy = new(() => ReadArray(Path.Combine(NeoXDirectory, "cases.json"), null));
    private static readonly Lazy<JsonElement[]> TinyCasesLazy = new(() => ReadArray(Path.Combine(TinyDirectory, "tokenizer_cases.json"), "cases"));
    private static readonly Lazy<JsonElement[]> ManifestCasesLazy = new(() => ReadArray(Path.Combine(TinyDirectory, "manifest.json"), "cases"));

    public static CobraTokenizer NeoX => NeoXLazy.Value;

    public static CobraTokenizer Tiny => TinyLazy.Value;

    public static JsonElement[] NeoXCases => NeoXCasesLazy.Value;

    public static JsonElement[] TinyCases => TinyCasesLazy.Value;

    /// <summary>The three end-to-end cases of the tiny-a kit (prompt turns, input ids, greedy ids, decoded text).</summary>
    public static JsonElement[] ManifestCases => ManifestCasesLazy.Value;

    /// <summary>Theory rows: one case index per row, so each case is its own test.</summary>
    public static TheoryData<int> Indices(int count)
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < count; i++)
        {
            data.Add(i);
        }

        return data;
    }

    public static int[] Ints(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt32()).ToArray();

    private static JsonElement[] ReadArray(string path, string? property)
    {
        using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
        JsonElement root = property is null ? document.RootElement : document.RootElement.GetProperty(property);
        return root.EnumerateArray().Select(e => e.Clone()).ToArray();
    }
}
