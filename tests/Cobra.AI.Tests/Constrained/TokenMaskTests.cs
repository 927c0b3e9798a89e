using Cobra.AI.Generation.Constrained;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Constrained;

public sealed class TokenMaskTests
{
    private const string Schema = """
        {"type":"object","properties":{"text":{"type":"string"},"n":{"type":"integer"}},"required":["text","n"],"additionalProperties":false}
        """;

    [Theory]
    [InlineData("""{"text":"He said \"hi\" \\ and left","n":1}""")]
    [InlineData("""{"text":"café ключ 日本語 😀🎉 𝄞 ü","n":-42}""")]
    [InlineData("""{"text":"tab\tnew\nline \u00e9 \/","n":0}""")]
    [InlineData("""{"text":"","n":7}""")]
    public void The_tokenizers_own_encoding_of_a_valid_answer_is_allowed_token_by_token(string text)
    {
        // GPT-NeoX splits many non-ASCII characters into byte tokens: the mask must follow UTF-8 across tokens.
        ITokenConstraint constraint = ConstraintHarness.Feed(ConstraintHarness.Create(Schema), text);
        Assert.True(constraint.IsComplete);
    }

    [Fact]
    public void Unicode_split_across_tokens_is_tracked_byte_by_byte()
    {
        int[] ids = [.. ConstraintHarness.Tokenizer.Encode("""{"text":"😀""")];
        Assert.Contains(ids, id => ConstraintHarness.Tokenizer.GetTokenBytes(id) is [>= 0xF0, ..] t && t.Length < 4);
        ITokenConstraint constraint = ConstraintHarness.Create(Schema);
        ConstraintHarness.Feed(constraint, """{"text":"😀""");
    }

    [Fact]
    public void Once_the_value_is_complete_only_eos_is_allowed()
    {
        ITokenConstraint constraint = ConstraintHarness.Feed(ConstraintHarness.Create(Schema), """{"text":"x","n":12}""");
        Assert.True(constraint.IsComplete);
        var allowed = new bool[ConstraintHarness.PaddedVocab];
        constraint.FillAllowed(allowed);
        Assert.Equal([ConstraintHarness.Tokenizer.EosTokenId], Enumerable.Range(0, allowed.Length).Where(i => allowed[i]));
        constraint.Accept(ConstraintHarness.Tokenizer.EosTokenId);
        Assert.True(constraint.IsComplete);
        Assert.Throws<InvalidOperationException>(() => constraint.Accept(ConstraintHarness.Tokenizer.Encode("x")[0]));
    }

    [Fact]
    public void Eos_is_refused_before_the_value_is_complete()
    {
        ITokenConstraint constraint = ConstraintHarness.Feed(ConstraintHarness.Create(Schema), """{"text":"x""");
        Assert.False(constraint.IsComplete);
        var allowed = new bool[ConstraintHarness.PaddedVocab];
        constraint.FillAllowed(allowed);
        Assert.False(allowed[ConstraintHarness.Tokenizer.EosTokenId]);
        Assert.Throws<InvalidOperationException>(() => constraint.Accept(ConstraintHarness.Tokenizer.EosTokenId));
    }

    [Fact]
    public void A_top_level_number_may_end_with_eos_and_is_complete_at_its_digit_bound()
    {
        ITokenConstraint constraint = ConstraintHarness.Feed(ConstraintHarness.Create("""{"type":"integer"}"""), "12");
        var allowed = new bool[ConstraintHarness.PaddedVocab];
        constraint.FillAllowed(allowed);
        Assert.True(allowed[ConstraintHarness.Tokenizer.EosTokenId]);
        Assert.False(constraint.IsComplete);
        ConstraintHarness.Feed(constraint, "3456789");
        Assert.True(constraint.IsComplete);
    }

    [Fact]
    public void Special_tokens_padding_ids_and_wrong_tokens_are_refused()
    {
        ITokenConstraint constraint = ConstraintHarness.Create(ChatResponseFormat.Json);
        var allowed = new bool[ConstraintHarness.PaddedVocab];
        constraint.FillAllowed(allowed);
        for (int id = 0; id < ConstraintHarness.Tokenizer.VocabularySize; id++)
        {
            Assert.False(ConstraintHarness.Tokenizer.IsSpecial(id) && allowed[id], $"special {id}");
        }

        for (int id = ConstraintHarness.Tokenizer.VocabularySize; id < ConstraintHarness.PaddedVocab; id++)
        {
            Assert.False(allowed[id], $"padding {id}");
        }

        Assert.Throws<InvalidOperationException>(() => constraint.Accept(1));
        Assert.Throws<InvalidOperationException>(() => constraint.Accept(ConstraintHarness.PaddedVocab - 1));
        Assert.Throws<InvalidOperationException>(() => constraint.Accept(ConstraintHarness.Tokenizer.Encode("[")[0]));

        // A refused token leaves the state as it was.
        ConstraintHarness.Feed(constraint, """{"a":1}""");
        Assert.True(constraint.IsComplete);
    }

    [Fact]
    public void The_mask_holds_exactly_the_tokens_accept_takes()
    {
        ITokenConstraint probe = ConstraintHarness.Feed(ConstraintHarness.Create(Schema), """{"text":"ab""");
        var allowed = new bool[ConstraintHarness.PaddedVocab];
        probe.FillAllowed(allowed);
        Assert.Contains(allowed, a => a);
        for (int id = 0; id < ConstraintHarness.Tokenizer.VocabularySize; id += 37)
        {
            ITokenConstraint fresh = ConstraintHarness.Feed(ConstraintHarness.Create(Schema), """{"text":"ab""");
            bool accepted = true;
            try
            {
                fresh.Accept(id);
            }
            catch (InvalidOperationException)
            {
                accepted = false;
            }

            Assert.Equal(allowed[id], accepted);
        }
    }

    [Fact]
    public void A_mask_of_the_wrong_length_is_refused()
    {
        ITokenConstraint constraint = ConstraintHarness.Create(ChatResponseFormat.Json);
        Assert.Throws<ArgumentException>(() => constraint.FillAllowed(new bool[ConstraintHarness.Tokenizer.VocabularySize]));
    }
}
