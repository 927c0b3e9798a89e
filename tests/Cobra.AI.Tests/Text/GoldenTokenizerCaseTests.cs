using Xunit;

namespace Cobra.AI.Tests.Text;

/// <summary>
/// Every case of the two tokenizer fixtures: the real GPT-NeoX-20B tokenizer (ids and decode from
/// Hugging Face's tokenizers JS port) and the tiny-a kit's tokenizer (ids and both decodes from
/// Hugging Face tokenizers, Rust).
/// </summary>
public sealed class GoldenTokenizerCaseTests
{
    public static TheoryData<int> NeoXCaseIndices => TextFixtures.Indices(TextFixtures.NeoXCases.Length);

    public static TheoryData<int> TinyCaseIndices => TextFixtures.Indices(TextFixtures.TinyCases.Length);

    [Theory]
    [MemberData(nameof(NeoXCaseIndices))]
    public void NeoX_encode_matches_reference(int index)
    {
        var c = TextFixtures.NeoXCases[index];
        Assert.Equal(TextFixtures.Ints(c.GetProperty("ids")), TextFixtures.NeoX.Encode(c.GetProperty("text").GetString()!));
    }

    [Theory]
    [MemberData(nameof(NeoXCaseIndices))]
    public void NeoX_decode_keeping_special_tokens_matches_reference(int index)
    {
        var c = TextFixtures.NeoXCases[index];
        string decoded = TextFixtures.NeoX.Decode(TextFixtures.Ints(c.GetProperty("ids")), skipSpecialTokens: false);
        Assert.Equal(c.GetProperty("decoded").GetString(), decoded);
    }

    [Theory]
    [MemberData(nameof(TinyCaseIndices))]
    public void Tiny_encode_matches_reference(int index)
    {
        var c = TextFixtures.TinyCases[index];
        Assert.Equal(TextFixtures.Ints(c.GetProperty("ids")), TextFixtures.Tiny.Encode(c.GetProperty("text").GetString()!));
    }

    [Theory]
    [MemberData(nameof(TinyCaseIndices))]
    public void Tiny_decode_matches_reference(int index)
    {
        var c = TextFixtures.TinyCases[index];
        int[] ids = TextFixtures.Ints(c.GetProperty("ids"));
        Assert.Equal(c.GetProperty("decoded").GetString(), TextFixtures.Tiny.Decode(ids, skipSpecialTokens: false));
        Assert.Equal(c.GetProperty("decoded_skip_special").GetString(), TextFixtures.Tiny.Decode(ids, skipSpecialTokens: true));
    }
}
