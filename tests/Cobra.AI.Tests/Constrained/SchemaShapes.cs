using Xunit;
using System.ComponentModel;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Tests.Constrained;

#pragma warning disable CA1812 // Types only used for schema generation.
public enum Colour
{
    Red,
    Green,
    Blue,
}

[Description("A person")]
internal sealed record Person(string Name, int Age, double Height, bool Active, string? Nick, Colour Favourite, List<string> Tags);

internal sealed record Item(string Sku, int Count);

internal sealed record Inventory(Item[] Items, Item? Featured, Dictionary<string, int>? Stock);

internal sealed class TreeNode
{
    public string Value { get; set; } = string.Empty;

    public List<TreeNode> Children { get; set; } = [];

    public TreeNode? Parent { get; set; }
}

internal sealed record Stamped(DateTime When, DateTimeOffset At, DateOnly Day, Guid Id, DateTime? Maybe, List<Guid> Related);

internal sealed record Options(string Name, int Count = 3, string? Comment = null, [property: Description("a weight")] long Weight = 0, Colour? Shade = null, decimal Price = 0, float Ratio = 0);
#pragma warning restore CA1812

/// <summary>The schema shapes the random walks cover: what Microsoft.Extensions.AI emits, and hand-written ones.</summary>
internal static class SchemaShapes
{
    /// <summary>The shape names, as theory data.</summary>
    public static TheoryData<string> Names()
    {
        var data = new TheoryData<string>();
        foreach (string shape in All.Keys)
        {
            data.Add(shape);
        }

        return data;
    }

    public static readonly Dictionary<string, string> All = new(StringComparer.Ordinal)
    {
        ["person (M.E.AI record)"] = Generated<Person>(),
        ["inventory (M.E.AI nested, nullable object, dictionary)"] = Generated<Inventory>(),
        ["tree (M.E.AI recursive class, #-pointer refs)"] = Generated<TreeNode>(),
        ["options (M.E.AI defaults, nullable enum, all optional but one)"] = Generated<Options>(),
        ["int array (M.E.AI)"] = Generated<int[]>(),
        ["dates and ids (M.E.AI format date-time, date, uuid)"] = Generated<Stamped>(),
        ["enum top level (M.E.AI)"] = Generated<Colour>(),
        ["string top level"] = """{"type":"string"}""",
        ["number top level"] = """{"type":"number"}""",
        ["bounded arrays"] = """
            {"type":"object","properties":{"two_to_four":{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":4},
             "exactly_one":{"type":"array","items":{"type":"boolean"},"minItems":1,"maxItems":1},
             "none":{"type":"array","maxItems":0}},
             "required":["two_to_four","exactly_one","none"],"additionalProperties":false}
            """,
        ["string lengths"] = """
            {"type":"object","properties":{"short":{"type":"string","maxLength":3},"code":{"type":"string","minLength":2,"maxLength":2},
             "long":{"type":"string","minLength":5},"empty":{"type":"string","maxLength":0}},
             "required":["short","code","long","empty"],"additionalProperties":false}
            """,
        ["enum and const"] = """
            {"type":"object","properties":{"status":{"enum":["on","off","on\"quoted\\", 12, 1.5, null, true, {"a":[1]}]},
             "version":{"const":"v2"},"unit":{"type":"string","enum":["cm","mm","m"]},"maybe":{"type":["string","null"],"enum":["x",null,3]}},
             "required":["status","version","unit","maybe"],"additionalProperties":false}
            """,
        ["defs and refs"] = """
            {"$defs":{"point":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"],"additionalProperties":false},
                      "label":{"type":"string","maxLength":20}},
             "type":"object","properties":{"from":{"$ref":"#/$defs/point"},"to":{"$ref":"#/$defs/point"},"name":{"$ref":"#/$defs/label"}},
             "required":["from","to","name"]}
            """,
        ["recursive defs (linked list, required recursion through nullable)"] = """
            {"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"],"additionalProperties":false}},
             "$ref":"#/$defs/node"}
            """,
        ["unions"] = """
            {"type":"object","properties":{"a":{"type":["string","number","boolean","null","array","object"]},
             "b":{"anyOf":[{"type":"integer"},{"type":"string","maxLength":4},{"type":"array","items":{"type":"null"}}]},
             "c":{"oneOf":[{"type":"object","properties":{"k":{"const":1}},"required":["k"]},{"type":"boolean"}]}},
             "required":["a","b","c"]}
            """,
        ["free values (empty schemas, object without properties)"] = """
            {"type":"object","properties":{"anything":{},"obj":{"type":"object"},"list":{"type":"array"},"t":true},"required":["anything","obj","list","t"]}
            """,
        ["unicode property names and escapes"] = """
            {"type":"object","properties":{"naïve \"q\" \\ ключ":{"type":"string"},"emoji😀":{"type":"integer"}},"required":["naïve \"q\" \\ ключ","emoji😀"],"additionalProperties":false}
            """,
    };

    private static string Generated<T>() => JsonSerializer.Serialize(ChatResponseFormat.ForJsonSchema<T>().Schema);
}
