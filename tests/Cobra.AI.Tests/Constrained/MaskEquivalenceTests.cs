using System.Text;
using Cobra.AI.Generation.Constrained;
using Xunit;

namespace Cobra.AI.Tests.Constrained;

/// <summary>The trie walk (and its fast path inside strings) against brute force: every token's bytes stepped one by one.</summary>
public sealed class MaskEquivalenceTests
{
    private const string Schema = """
        {"type":"object","properties":{"text":{"type":"string"},"short":{"type":"string","maxLength":3},"code":{"type":"string","minLength":2},
         "n":{"type":["number","null"]},"map":{"type":"object","additionalProperties":{"type":"integer"}},"e":{"enum":["ab","abc",1]}},
         "required":["text","n"],"additionalProperties":false}
        """;

    [Theory]
    [InlineData("")]
    [InlineData("{")]
    [InlineData("{\"")]
    [InlineData("{\"te")]
    [InlineData("{\"text\":")]
    [InlineData("{\"text\":\"ab")]
    [InlineData("{\"text\":\"a\\")]
    [InlineData("{\"text\":\"a\\u00")]
    [InlineData("{\"text\":\"a\\uD")]
    [InlineData("{\"text\":\"a\xE6")]
    [InlineData("{\"text\":\"a\xF0\x9F")]
    [InlineData("{\"text\":\"\",\"short\":\"a")]
    [InlineData("{\"text\":\"\",\"short\":\"abc")]
    [InlineData("{\"text\":\"\",\"code\":\"a")]
    [InlineData("{\"text\":\"\",\"n\":12")]
    [InlineData("{\"text\":\"\",\"n\":-")]
    [InlineData("{\"text\":\"\",\"n\":1.")]
    [InlineData("{\"text\":\"\",\"n\":null,\"map\":{")]
    [InlineData("{\"text\":\"\",\"n\":null,\"map\":{\"k")]
    [InlineData("{\"text\":\"\",\"n\":null,\"map\":{\"k\":3")]
    [InlineData("{\"text\":\"\",\"n\":null,\"e\":\"ab")]
    [InlineData("{\"text\":\"\",\"n\":null,\"e\":1")]
    [InlineData("{\"text\":\"\",\"n\":null}")]
    public void The_mask_equals_stepping_every_token(string prefix) => AssertEquivalent(Latin1Bytes(prefix), budget: null);

    [Theory]
    [InlineData("{\"text\":\"ab", 30)]
    [InlineData("{\"text\":\"ab", 19)]
    [InlineData("{\"te", 20)]
    [InlineData("{\"text\":\"\",\"n\":1", 18)]
    public void The_budgeted_mask_equals_stepping_every_token_and_checking_the_shortest_completion(string prefix, int budget) =>
        AssertEquivalent(Latin1Bytes(prefix), budget);

    private static void AssertEquivalent(byte[] prefix, int? budget)
    {
        // Bytes as single-byte tokens, so any state (a split UTF-8 character too) can be reached.
        ITokenConstraint constraint = ConstraintHarness.Create(Schema, budget);
        JsonMatchState state = JsonMatcher.Start(ConstraintHarness.Grammar(Schema));
        foreach (byte b in prefix)
        {
            constraint.Accept(SingleByteToken(b));
            Assert.True(JsonMatcher.Step(ref state, b));
        }

        var allowed = new bool[ConstraintHarness.PaddedVocab];
        constraint.FillAllowed(allowed);
        var tokenizer = ConstraintHarness.Tokenizer;
        int mismatches = 0;
        var first = new StringBuilder();
        for (int id = 0; id < ConstraintHarness.PaddedVocab; id++)
        {
            bool expected;
            if (id == tokenizer.EosTokenId)
            {
                expected = JsonMatcher.IsAccepting(in state);
            }
            else if (id >= tokenizer.VocabularySize || tokenizer.IsSpecial(id))
            {
                expected = false;
            }
            else
            {
                JsonMatchState next = state;
                expected = ConstraintHarness.TokenBytes(id).All(b => JsonMatcher.Step(ref next, b))
                    && (budget is null || JsonMatcher.MinCompletion(in next) <= budget.Value - prefix.Length - 1);
            }

            if (expected != allowed[id] && mismatches++ < 5)
            {
                first.Append(id).Append(expected ? " missing; " : " extra; ");
            }
        }

        Assert.True(mismatches == 0, $"{mismatches} mismatches: {first}");
    }

    private static int SingleByteToken(byte b)
    {
        for (int id = 0; id < ConstraintHarness.Tokenizer.VocabularySize; id++)
        {
            if (!ConstraintHarness.Tokenizer.IsSpecial(id) && ConstraintHarness.TokenBytes(id) is [byte only] && only == b)
            {
                return id;
            }
        }

        throw new InvalidOperationException($"no single-byte token for {b:X2}");
    }

    // Test data spells raw bytes as \xNN chars.
    private static byte[] Latin1Bytes(string text) => text.Select(c => (byte)c).ToArray();
}
