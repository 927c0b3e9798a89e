using System.Text.Json;
using Cobra.AI.Generation.Constrained;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Constrained;

#pragma warning disable CA1812 // Only used for schema generation.
internal sealed record WithLink(string Name, Uri Link);
#pragma warning restore CA1812

public sealed class SchemaCompilerTests
{
    [Theory]
    [InlineData("""{"type":"string","pattern":"^a+$"}""", "pattern", "#")]
    [InlineData("""{"type":"object","properties":{"site":{"type":"string","format":"uri"}}}""", "format", "#/properties/site")]
    [InlineData("""{"type":"string","format":"time"}""", "format", "#")]
    [InlineData("""{"type":"string","format":"uuid","maxLength":40}""", "format", "#")]
    [InlineData("""{"type":"integer","minimum":0}""", "minimum", "#")]
    [InlineData("""{"type":"number","maximum":10}""", "maximum", "#")]
    [InlineData("""{"type":"number","exclusiveMinimum":0}""", "exclusiveMinimum", "#")]
    [InlineData("""{"type":"number","multipleOf":2}""", "multipleOf", "#")]
    [InlineData("""{"type":"array","items":{"type":"integer"},"uniqueItems":true}""", "uniqueItems", "#")]
    [InlineData("""{"type":"array","contains":{"type":"integer"}}""", "contains", "#")]
    [InlineData("""{"type":"array","prefixItems":[{"type":"integer"}]}""", "prefixItems", "#")]
    [InlineData("""{"type":"array","items":[{"type":"integer"}]}""", "items", "#/items")]
    [InlineData("""{"type":"object","patternProperties":{"^x":{"type":"string"}}}""", "patternProperties", "#")]
    [InlineData("""{"type":"object","minProperties":1}""", "minProperties", "#")]
    [InlineData("""{"type":"object","propertyNames":{"maxLength":3}}""", "propertyNames", "#")]
    [InlineData("""{"type":"object","unevaluatedProperties":false}""", "unevaluatedProperties", "#")]
    [InlineData("""{"type":"object","dependentRequired":{"a":["b"]}}""", "dependentRequired", "#")]
    [InlineData("""{"allOf":[{"type":"string"}]}""", "allOf", "#")]
    [InlineData("""{"not":{"type":"string"}}""", "not", "#")]
    [InlineData("""{"if":{"type":"string"},"then":{"maxLength":2}}""", "if", "#")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"array","items":{"type":"string","minLength":1,"pattern":"x"}}}}""", "pattern", "#/properties/a/items")]
    [InlineData("""{"$defs":{"d":{"type":"string","format":"email"}},"type":"object","properties":{"id":{"$ref":"#/$defs/d"}}}""", "format", "#/$defs/d")]
    [InlineData("""{"type":"object","properties":{"a":{"$ref":"#/$defs/x","maxLength":2}},"$defs":{"x":{"type":"string"}}}""", "maxLength", "#/properties/a")]
    [InlineData("""{"$ref":"other.json#/x"}""", "$ref", "#")]
    [InlineData("""{"type":"object","properties":{"a":{"$id":"x","type":"string"}}}""", "$id", "#/properties/a")]
    [InlineData("""{"type":"string","enum":["a"],"pattern":"a"}""", "pattern", "#")]
    [InlineData("""{"type":"string","contentSchema":{}}""", "contentSchema", "#")]
    public void An_unenforceable_keyword_is_refused_by_name_and_location(string schema, string keyword, string path)
    {
        var error = Assert.Throws<NotSupportedException>(() => Compile(schema));
        Assert.Contains($"'{keyword}'", error.Message, StringComparison.Ordinal);
        Assert.Contains($"'{path}'", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{"anyOf":[{"type":"string"},{"type":"string","maxLength":3}]}""")]
    [InlineData("""{"anyOf":[{"type":"object","properties":{"a":{"type":"string"}}},{"type":"object","properties":{"b":{"type":"string"}}}]}""")]
    [InlineData("""{"oneOf":[{"type":"integer"},{"type":"number"}]}""")]
    [InlineData("""{"oneOf":[{"enum":["a","b"]},{"const":"a"}]}""")]
    [InlineData("""{"anyOf":[{"type":"string"},{"const":"x"}]}""")]
    public void Unions_that_cannot_be_told_apart_by_their_first_character_are_refused(string schema)
    {
        var error = Assert.Throws<NotSupportedException>(() => Compile(schema));
        Assert.Contains("at '#'", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{"type":"strin"}""", "#/type")]
    [InlineData("""{"type":"array","minItems":3,"maxItems":2}""", "#")]
    [InlineData("""{"type":"string","minLength":-1}""", "#/minLength")]
    [InlineData("""{"type":"object","properties":{"a":{"$ref":"#/$defs/missing"}}}""", "#/properties/a/$ref")]
    [InlineData("""{"type":"object","properties":{"a":5}}""", "#/properties/a")]
    [InlineData("""{"type":"object","required":["x"],"additionalProperties":false}""", "#/required")]
    [InlineData("""{"$ref":"#"}""", "#")]
    public void A_malformed_schema_is_an_argument_error_naming_the_location(string schema, string path)
    {
        var error = Assert.Throws<ArgumentException>(() => Compile(schema));
        Assert.Contains($"'{path}'", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("false")]
    [InlineData("""{"enum":[]}""")]
    [InlineData("""{"type":"string","enum":[1,2]}""")]
    [InlineData("""{"type":"object","properties":{"self":{"$ref":"#"}},"required":["self"]}""")]
    [InlineData("""{"type":"array","items":{"$ref":"#"},"minItems":1}""")]
    public void A_schema_that_admits_no_finite_value_is_refused(string schema)
    {
        var error = Assert.Throws<ArgumentException>(() => Compile(schema));
        Assert.Contains("admits no value", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_record_with_a_uri_is_refused_for_its_format_keyword()
    {
        var error = Assert.Throws<NotSupportedException>(() =>
            JsonConstraints.Compile(ChatResponseFormat.ForJsonSchema<WithLink>(), ConstraintHarness.Tokenizer, ConstraintHarness.PaddedVocab));
        Assert.Contains("'format'", error.Message, StringComparison.Ordinal);
        Assert.Contains("'#/properties/link'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Text_and_no_format_are_unconstrained_and_json_is_constrained()
    {
        Assert.Null(JsonConstraints.Compile(null, ConstraintHarness.Tokenizer, ConstraintHarness.PaddedVocab));
        Assert.Null(JsonConstraints.Compile(ChatResponseFormat.Text, ConstraintHarness.Tokenizer, ConstraintHarness.PaddedVocab));
        Assert.NotNull(JsonConstraints.Compile(ChatResponseFormat.Json, ConstraintHarness.Tokenizer, ConstraintHarness.PaddedVocab));
    }

    [Fact]
    public void A_padded_vocabulary_smaller_than_the_tokenizer_is_refused()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() =>
            JsonConstraints.Compile(ChatResponseFormat.Json, ConstraintHarness.Tokenizer, ConstraintHarness.Tokenizer.VocabularySize - 1));
        Assert.Equal("paddedVocabSize", error.ParamName);
    }

    [Fact]
    public void The_same_schema_text_is_compiled_once()
    {
        using JsonDocument a = JsonDocument.Parse("""{"type":"object","properties":{"cached":{"type":"string"}}}""");
        using JsonDocument b = JsonDocument.Parse("""{"type":"object","properties":{"cached":{"type":"string"}}}""");
        Assert.Same(JsonConstraints.GetOrCompile(a.RootElement), JsonConstraints.GetOrCompile(b.RootElement));
    }

    [Fact]
    public void The_schema_cache_is_bounded()
    {
        using JsonDocument first = JsonDocument.Parse("""{"type":"object","properties":{"evicted":{"type":"string"}}}""");
        JsonGrammar original = JsonConstraints.GetOrCompile(first.RootElement);
        for (int i = 0; i <= JsonConstraints.CacheCapacity; i++)
        {
            using JsonDocument other = JsonDocument.Parse("{\"type\":\"object\",\"properties\":{\"p" + i + "\":{\"type\":\"string\"}}}");
            JsonConstraints.GetOrCompile(other.RootElement);
        }

        Assert.NotSame(original, JsonConstraints.GetOrCompile(first.RootElement));
    }

    [Fact]
    public void Every_shape_in_the_walks_compiles()
    {
        foreach ((string name, string schema) in SchemaShapes.All)
        {
            JsonGrammar grammar = Compile(schema);
            Assert.True(grammar.Root.MinDepth <= JsonGrammar.MaxNestingDepth, name);
        }
    }

    private static JsonGrammar Compile(string schema)
    {
        using JsonDocument document = JsonDocument.Parse(schema);
        return SchemaCompiler.Compile(document.RootElement);
    }
}
