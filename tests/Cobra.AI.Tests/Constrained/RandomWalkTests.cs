using System.Text.Json;
using Microsoft.Extensions.AI;
using Xunit;
using Xunit.Abstractions;

namespace Cobra.AI.Tests.Constrained;

public sealed class RandomWalkTests(ITestOutputHelper output)
{
    private const int MaxTokens = 3000;

    public static TheoryData<string, int> Walks()
    {
        var data = new TheoryData<string, int>();
        foreach (string shape in SchemaShapes.All.Keys)
        {
            data.Add(shape, 1);
            data.Add(shape, 2);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Walks))]
    public void Random_walks_produce_json_that_validates(string shape, int seed)
    {
        string schema = SchemaShapes.All[shape];
        for (int walk = 0; walk < 3; walk++)
        {
            // Walks differ in how soon they close values: short answers and long ones both get covered.
            double closeBias = walk switch { 0 => 0.7, 1 => 0.45, _ => 0.3 };
            string text = ConstraintHarness.RandomWalk(ConstraintHarness.Create(schema), seed * 100 + walk, MaxTokens, closeBias, unicodeBias: 0.15);
            output.WriteLine(text);
            ConstraintHarness.AssertValid(schema, text);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Dates_and_ids_deserialise_with_system_text_json(int seed)
    {
        string schema = SchemaShapes.All["dates and ids (M.E.AI format date-time, date, uuid)"];
        string text = ConstraintHarness.RandomWalk(ConstraintHarness.Create(schema), seed, MaxTokens, closeBias: 0.3, unicodeBias: 0);
        output.WriteLine(text);
        Stamped? value = JsonSerializer.Deserialize<Stamped>(text, AIJsonUtilities.DefaultOptions);
        Assert.NotNull(value);
        Assert.NotEqual(default, value.When);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Json_mode_gives_an_object_that_parses(int seed)
    {
        string text = ConstraintHarness.RandomWalk(ConstraintHarness.Create(ChatResponseFormat.Json), seed, MaxTokens, closeBias: 0.4, unicodeBias: 0.15);
        output.WriteLine(text);
        using JsonDocument document = JsonDocument.Parse(text);
        Assert.Equal(JsonValueKind.Object, document.RootElement.ValueKind);
    }
}
