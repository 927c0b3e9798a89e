using System.Text;
using Cobra.AI.Generation.Constrained;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Constrained;

public sealed class BudgetTests
{
    public static TheoryData<string> Shapes() => SchemaShapes.Names();

    [Theory]
    [MemberData(nameof(Shapes))]
    public void With_a_token_budget_the_value_always_ends_within_it(string shape)
    {
        string schema = SchemaShapes.All[shape];
        int shortest = ConstraintHarness.Grammar(schema).Root.MinBytes;
        foreach ((int slack, int seed) in new[] { (0, 1), (3, 2), (40, 3), (120, 4) })
        {
            int budget = shortest + slack;

            // Rarely closing on its own, as a random model: only the budget ends these walks.
            string text = ConstraintHarness.RandomWalk(ConstraintHarness.Create(schema, budget), seed, budget, closeBias: 0.05, unicodeBias: 0.2, out int tokens);
            Assert.True(tokens <= budget, $"{tokens} tokens > budget {budget}");
            ConstraintHarness.AssertValid(schema, text);
        }
    }

    [Fact]
    public void Json_mode_ends_within_its_budget()
    {
        for (int seed = 1; seed <= 3; seed++)
        {
            string text = ConstraintHarness.RandomWalk(ConstraintHarness.Create(ChatResponseFormat.Json, 30), seed, 30, closeBias: 0.05, unicodeBias: 0.2, out int tokens);
            Assert.True(tokens <= 30);
            Assert.StartsWith("{", text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void A_budget_below_the_shortest_value_is_not_enforced()
    {
        // {"a":""} needs 8 bytes: with 3 tokens no valid answer exists, so the mask stays the plain grammar's.
        ITokenConstraint constraint = ConstraintHarness.Create("""{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}""", 3);
        ConstraintHarness.Feed(constraint, """{"a":"hello world""");
        Assert.False(constraint.IsComplete);
    }

    [Fact]
    public void A_non_positive_budget_is_refused()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() =>
            JsonConstraints.Compile(ChatResponseFormat.Json, ConstraintHarness.Tokenizer, ConstraintHarness.PaddedVocab, 0));
        Assert.Equal("maxOutputTokens", error.ParamName);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void The_shortest_completion_is_exact_at_every_byte(string shape)
    {
        // Exact means: zero only when complete, no byte shortens it by more than one, and some byte by exactly one.
        string schema = SchemaShapes.All[shape];
        JsonGrammar grammar = ConstraintHarness.Grammar(schema);
        for (int seed = 1; seed <= 2; seed++)
        {
            string text = ConstraintHarness.RandomWalk(ConstraintHarness.Create(schema), seed, 3000, closeBias: 0.4, unicodeBias: 0.2);
            JsonMatchState state = JsonMatcher.Start(grammar);
            byte[] bytes = Encoding.UTF8.GetBytes(text);
            for (int i = 0; i <= bytes.Length; i++)
            {
                long cost = JsonMatcher.MinCompletion(in state);
                Assert.Equal(JsonMatcher.IsAccepting(in state), cost == 0);
                bool shortened = cost == 0;
                for (int b = 0; b < 256; b++)
                {
                    JsonMatchState next = state;
                    if (JsonMatcher.Step(ref next, (byte)b))
                    {
                        long after = JsonMatcher.MinCompletion(in next);
                        Assert.True(after >= cost - 1, $"byte {b} after '{Encoding.UTF8.GetString(bytes, 0, i)}': {cost} -> {after}");
                        shortened |= after == cost - 1;
                    }
                }

                Assert.True(shortened, $"no byte shortens the completion ({cost}) after '{Encoding.UTF8.GetString(bytes, 0, i)}'");
                if (i < bytes.Length)
                {
                    Assert.True(JsonMatcher.Step(ref state, bytes[i]));
                }
            }
        }
    }
}
