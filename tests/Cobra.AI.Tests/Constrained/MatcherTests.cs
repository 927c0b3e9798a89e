using System.Text;
using Cobra.AI.Generation.Constrained;
using Xunit;

namespace Cobra.AI.Tests.Constrained;

public sealed class MatcherTests
{
    private const string Person = """
        {"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"nick":{"type":["string","null"]},
         "fav":{"type":"string","enum":["Red","Green","Blue"]},"tags":{"type":"array","items":{"type":"string"},"minItems":1,"maxItems":2}},
         "required":["name","age","fav","tags"],"additionalProperties":false}
        """;

    [Theory]
    [InlineData("""{"name":"Ann","age":3,"nick":null,"fav":"Red","tags":["a"]}""")]
    [InlineData("""{"name":"Ann","age":3,"nick":"A","fav":"Red","tags":["a","b"]}""")]
    [InlineData("""{"name":"Ann","age":-30,"fav":"Blue","tags":["a"]}""")]
    [InlineData("""{"name":"q\"uo\\te \/ \b\f\n\r\t \u00e9\u20AC\uFFFF","age":0,"fav":"Green","tags":[""]}""")]
    [InlineData("""{"name":"café ключ 日本 😀 𝄞","age":123456789,"fav":"Red","tags":["é"]}""")]
    public void Valid_texts_are_accepted_completely(string text)
    {
        Assert.True(ConstraintHarness.Matches(Person, Encoding.UTF8.GetBytes(text), out bool accepting), text);
        Assert.True(accepting, text);
        ConstraintHarness.AssertValid(Person, text);
    }

    [Theory]
    [InlineData("""{"age":3,"name":"Ann",""", "declared order")]
    [InlineData("""{"name":"Ann","age":3,"fav":"Red","tags":["a"],"extra":1""", "undeclared property")]
    [InlineData("""{"name":"Ann","age":3,"tags":""", "required property skipped")]
    [InlineData("""{"name":"Ann","age":3,"fav":"Redd""", "not an enum value")]
    [InlineData("""{"name":"Ann","age":3,"fav":"Purple""", "not an enum value")]
    [InlineData("""{"name":"Ann","age":3,"fav":"Red","tags":[]""", "minItems")]
    [InlineData("""{"name":"Ann","age":3,"fav":"Red","tags":["a","b","c""", "maxItems")]
    [InlineData("""{"name":"Ann","age":1234567890""", "integer digits")]
    [InlineData("""{"name":"Ann","age":3.5""", "integer fraction")]
    [InlineData("""{"name":"Ann","age":03""", "leading zero")]
    [InlineData("""{"name":"Ann","age":-""" + "\"", "bare minus")]
    [InlineData("""{"name":"Ann","age":1e5""", "exponent")]
    [InlineData("""{ "name""", "whitespace")]
    [InlineData("""{"name":"Ann",}""", "trailing comma")]
    [InlineData("""{"name":"a\x""", "bad escape")]
    [InlineData("""{"name":"a\ud800""", "surrogate escape")]
    [InlineData("""{"name":"a\uDFFF""", "surrogate escape")]
    [InlineData("""{"name":"a\u12G""", "bad hex")]
    [InlineData("""{"name":"Ann","age":3,"nick":nul,""", "broken null")]
    [InlineData("""{"name":"Ann","age":3,"fav":"Red","tags":["a"]} """, "text after the value")]
    public void Invalid_texts_are_rejected(string text, string why)
    {
        Assert.False(ConstraintHarness.Matches(Person, Encoding.UTF8.GetBytes(text), out _), why);
    }

    [Theory]
    [InlineData(new byte[] { 0x01 }, "raw control character")]
    [InlineData(new byte[] { 0x0A }, "raw newline")]
    [InlineData(new byte[] { 0xC0, 0x80 }, "overlong")]
    [InlineData(new byte[] { 0xE0, 0x80, 0x80 }, "overlong")]
    [InlineData(new byte[] { 0xED, 0xA0, 0x80 }, "encoded surrogate")]
    [InlineData(new byte[] { 0xF4, 0x90, 0x80, 0x80 }, "past U+10FFFF")]
    [InlineData(new byte[] { 0xF5 }, "invalid lead byte")]
    [InlineData(new byte[] { 0x80 }, "continuation without lead")]
    [InlineData(new byte[] { 0xC3, 0x41 }, "missing continuation")]
    [InlineData(new byte[] { 0xE2, 0x82, (byte)'"' }, "string closed inside a character")]
    public void Invalid_utf8_and_control_characters_in_strings_are_rejected(byte[] inside, string why)
    {
        byte[] text = [.. "{\"name\":\"a"u8.ToArray(), .. inside];
        Assert.False(ConstraintHarness.Matches(Person, text, out _), why);
    }

    [Fact]
    public void Max_length_counts_utf16_units_and_min_length_wants_ascii()
    {
        const string Schema = """{"type":"string","minLength":2,"maxLength":3}""";
        Assert.True(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes("\"abc\""), out bool accepting) && accepting);
        Assert.True(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes("\"ab😀"), out _) is false, "emoji is two UTF-16 units: 4 > 3");
        Assert.True(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes("\"abé\""), out accepting) && accepting);
        Assert.False(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes("\"é"), out _), "below minLength only ASCII");
        Assert.False(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes("\"a\""), out _), "too short");
        Assert.False(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes("\"abcd"), out _), "too long");
        Assert.True(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes("\"ab\\n\""), out accepting) && accepting, "an escape is one character");
    }

    [Theory]
    [InlineData("uuid", "\"0f8fad5b-d9cb-469f-a165-70867728950E\"", true)]
    [InlineData("uuid", "\"0f8fad5b-d9cb-469f-a165-7086772895\"", false)]
    [InlineData("uuid", "\"0f8fad5bd9cb469fa16570867728950e\"", false)]
    [InlineData("uuid", "\"0g8fad5b", false)]
    [InlineData("date", "\"2024-02-28\"", true)]
    [InlineData("date", "\"2024-02-29", false)]
    [InlineData("date", "\"2024-13", false)]
    [InlineData("date", "\"2024-00", false)]
    [InlineData("date", "\"0999", false)]
    [InlineData("date", "\"2024-1-", false)]
    [InlineData("date-time", "\"2024-12-01T23:59:59Z\"", true)]
    [InlineData("date-time", "\"2024-12-01T00:00:00.1234567+13:59\"", true)]
    [InlineData("date-time", "\"2024-12-01T00:00:00-05:30\"", true)]
    [InlineData("date-time", "\"2024-12-01T24", false)]
    [InlineData("date-time", "\"2024-12-01T23:60", false)]
    [InlineData("date-time", "\"2024-12-01T23:59:60", false)]
    [InlineData("date-time", "\"2024-12-01T23:59:59\"", false)]
    [InlineData("date-time", "\"2024-12-01T23:59:59.12345678", false)]
    [InlineData("date-time", "\"2024-12-01T23:59:59+14", false)]
    [InlineData("date-time", "\"2024-12-01 23", false)]
    public void Formats_take_only_their_shape(string format, string text, bool complete)
    {
        string schema = $$"""{"type":"string","format":"{{format}}"}""";
        bool matched = ConstraintHarness.Matches(schema, Encoding.UTF8.GetBytes(text), out bool accepting);
        Assert.Equal(complete, matched && accepting);
        if (complete)
        {
            ConstraintHarness.AssertValid(schema, text);
        }
    }

    [Fact]
    public void Enum_and_const_match_exactly()
    {
        const string Schema = """{"enum":["a","ab",1,12,null,{"k":[true]}]}""";
        foreach (string value in new[] { "\"a\"", "\"ab\"", "1", "12", "null", """{"k":[true]}""" })
        {
            Assert.True(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes(value), out bool accepting) && accepting, value);
        }

        foreach (string value in new[] { "\"b", "\"abc", "123", "2", "true", """{"k":[false""", "\"a\\u0062" })
        {
            Assert.False(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes(value), out _), value);
        }

        Assert.True(ConstraintHarness.Matches("""{"const":"x"}""", "\"x\""u8.ToArray(), out bool done) && done);
        Assert.False(ConstraintHarness.Matches("""{"const":"x"}""", "\"y"u8.ToArray(), out _));
    }

    [Fact]
    public void Nullable_values_take_null_or_the_type()
    {
        const string Schema = """{"type":"object","properties":{"n":{"type":["integer","null"]}},"required":["n"]}""";
        Assert.True(ConstraintHarness.Matches(Schema, """{"n":null}"""u8.ToArray(), out bool a) && a);
        Assert.True(ConstraintHarness.Matches(Schema, """{"n":7}"""u8.ToArray(), out bool b) && b);
        Assert.False(ConstraintHarness.Matches(Schema, """{"n":"7"""u8.ToArray(), out _));
        Assert.False(ConstraintHarness.Matches(Schema, """{"n":true"""u8.ToArray(), out _));
    }

    [Fact]
    public void Recursion_is_bounded_by_the_nesting_depth_and_then_must_close()
    {
        const string Schema = """
            {"$defs":{"node":{"type":"object","properties":{"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["next"]}},"$ref":"#/$defs/node"}
            """;
        var text = new StringBuilder();
        for (int depth = 1; depth <= JsonGrammar.MaxNestingDepth; depth++)
        {
            text.Append("{\"next\":");
            Assert.True(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes(text.ToString()), out _), $"depth {depth}");
        }

        Assert.False(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes(text + "{"), out _), "one container too many");
        string closed = text + "null" + new string('}', JsonGrammar.MaxNestingDepth);
        Assert.True(ConstraintHarness.Matches(Schema, Encoding.UTF8.GetBytes(closed), out bool accepting) && accepting);
        ConstraintHarness.AssertValid(Schema, closed);
    }

    [Fact]
    public void Json_mode_takes_objects_only_at_the_top_and_bounds_nesting()
    {
        var grammar = JsonGrammar.AnyObject;
        Assert.True(Run(grammar, """{"a":[1,-2.5,"x",true,false,null,{"b":{}}],"":[]}""", out bool accepting) && accepting);
        Assert.False(Run(grammar, "[", out _));
        Assert.False(Run(grammar, "\"", out _));
        string deep = "{\"a\":" + new string('[', JsonGrammar.MaxNestingDepth - 1);
        Assert.True(Run(grammar, deep, out _));
        Assert.False(Run(grammar, deep + "[", out _));
        Assert.True(Run(grammar, deep + "{", out _) is false);
        Assert.True(Run(grammar, deep + "1", out _));
    }

    private static bool Run(JsonGrammar grammar, string text, out bool accepting)
    {
        JsonMatchState state = JsonMatcher.Start(grammar);
        accepting = false;
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            if (!JsonMatcher.Step(ref state, b))
            {
                return false;
            }
        }

        accepting = JsonMatcher.IsAccepting(in state);
        return true;
    }
}
