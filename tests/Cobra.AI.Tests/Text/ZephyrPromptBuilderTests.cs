using Cobra.AI.Text;
using Xunit;

namespace Cobra.AI.Tests.Text;

public sealed class ZephyrPromptBuilderTests
{
    public static TheoryData<int> ManifestCaseIndices => TextFixtures.Indices(TextFixtures.ManifestCases.Length);

    [Theory]
    [MemberData(nameof(ManifestCaseIndices))]
    public void Kit_prompt_and_its_ids_match_upstream(int index)
    {
        var c = TextFixtures.ManifestCases[index];
        var turns = c.GetProperty("turns").EnumerateArray()
            .Select(t => (t[0].GetString()!, t[1].GetString()!))
            .ToList();

        string prompt = ZephyrPromptBuilder.Build(turns);

        Assert.Equal(c.GetProperty("prompt").GetString(), prompt);
        Assert.Equal(TextFixtures.Ints(c.GetProperty("input_ids")), TextFixtures.Tiny.Encode(prompt));
    }

    [Fact]
    public void Multi_turn_prompt_has_exact_layout()
    {
        string prompt = ZephyrPromptBuilder.Build([("user", "Q1"), ("assistant", "A1"), ("human", "Q2")]);

        Assert.Equal("<|user|>\nQ1<|endoftext|>\n<|assistant|>\nA1<|endoftext|>\n<|user|>\nQ2<|endoftext|>\n<|assistant|>\n", prompt);
    }

    [Fact]
    public void Image_marker_is_removed_and_message_stripped_like_python()
    {
        var builder = new ZephyrPromptBuilder();

        // U+001F counts as white space for Python's strip() but not for string.Trim().
        builder.AddTurn(PromptRole.User, "<image>\n\u001F Is it red? \u00A0");

        Assert.Equal("<|user|>\nIs it red?<|endoftext|>\n<|assistant|>\n", builder.GetPrompt());
    }

    [Fact]
    public void Empty_assistant_message_becomes_one_space()
    {
        var builder = new ZephyrPromptBuilder();
        builder.AddTurn(PromptRole.User, "Hi");

        string added = builder.AddTurn("gpt", "  <image> ");

        Assert.Equal(" <|endoftext|>", added);
        Assert.EndsWith("\n<|assistant|>\n <|endoftext|>", builder.GetPrompt(), StringComparison.Ordinal);
    }

    [Fact]
    public void Turns_must_alternate_starting_with_the_user()
    {
        Assert.Throws<InvalidOperationException>(() => new ZephyrPromptBuilder().AddTurn(PromptRole.Assistant, "A"));

        var builder = new ZephyrPromptBuilder();
        builder.AddTurn("human", "Q");
        Assert.Throws<InvalidOperationException>(() => builder.AddTurn("user", "Q again"));
    }

    [Fact]
    public void Unknown_role_name_is_rejected()
    {
        Assert.Throws<ArgumentException>(() => ZephyrPromptBuilder.ParseRole("system"));
    }
}
