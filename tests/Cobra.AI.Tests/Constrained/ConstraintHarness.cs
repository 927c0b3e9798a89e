using System.Text;
using System.Text.Json;
using Cobra.AI.Generation.Constrained;
using Cobra.AI.Tests.Text;
using Cobra.AI.Text;
using Json.Schema;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Constrained;

/// <summary>Drives constraints over the real GPT-NeoX vocabulary and checks what they produce.</summary>
internal static class ConstraintHarness
{
    /// <summary>Logit rows of the test: past the tokenizer's 50,277 tokens, like the model's padded embedding.</summary>
    public const int PaddedVocab = 50288;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    // Token bytes and classes once, not per step: walks would otherwise clone ~30k arrays per token.
    private static readonly Lazy<byte[][]> TokenBytesLazy = new(() =>
        Enumerable.Range(0, Tokenizer.VocabularySize).Select(Tokenizer.GetTokenBytes).ToArray());

    private static readonly Lazy<(bool[] Closer, bool[] Unicode)> ClassesLazy = new(() =>
    {
        byte[][] all = TokenBytesLazy.Value;
        var closer = new bool[all.Length];
        var unicode = new bool[all.Length];
        for (int id = 0; id < all.Length; id++)
        {
            closer[id] = all[id].Length <= 2 && all[id].AsSpan().IndexOfAny("\"]}"u8) >= 0;
            unicode[id] = all[id].AsSpan().IndexOfAnyInRange((byte)0x80, (byte)0xFF) >= 0;
        }

        return (closer, unicode);
    });

    public static CobraTokenizer Tokenizer => TextFixtures.NeoX;

    /// <summary>A token's bytes (shared: do not modify).</summary>
    public static byte[] TokenBytes(int id) => TokenBytesLazy.Value[id];

    public static ITokenConstraint Create(string schemaJson, int? maxTokens = null)
    {
        using JsonDocument document = JsonDocument.Parse(schemaJson);
        return Create(ChatResponseFormat.ForJsonSchema(document.RootElement.Clone()), maxTokens);
    }

    public static ITokenConstraint Create(ChatResponseFormat format, int? maxTokens = null) =>
        JsonConstraints.Compile(format, Tokenizer, PaddedVocab, maxTokens)!.Invoke();

    public static JsonGrammar Grammar(string schemaJson)
    {
        using JsonDocument document = JsonDocument.Parse(schemaJson);
        return JsonConstraints.GetOrCompile(document.RootElement);
    }

    /// <summary>
    /// Samples allowed tokens at random until the value is complete, checking every mask on the way. The picker
    /// mixes uniform picks (long tokens, unicode) with short closing tokens so that walks end; seeded, so a walk
    /// is the same on every run.
    /// </summary>
    public static string RandomWalk(ITokenConstraint constraint, int seed, int maxTokens, double closeBias = 0.5, double unicodeBias = 0.1) =>
        RandomWalk(constraint, seed, maxTokens, closeBias, unicodeBias, out _);

    public static string RandomWalk(ITokenConstraint constraint, int seed, int maxTokens, double closeBias, double unicodeBias, out int tokens)
    {
        tokens = 0;
        var random = new Random(seed);
        CobraTokenizer tokenizer = Tokenizer;
        (bool[] isCloser, bool[] isUnicode) = ClassesLazy.Value;
        var allowed = new bool[PaddedVocab];
        var candidates = new List<int>();
        var closers = new List<int>();
        var unicode = new List<int>();
        var bytes = new List<byte>();
        for (int step = 0; step < maxTokens; step++)
        {
            if (constraint.IsComplete)
            {
                break;
            }

            constraint.FillAllowed(allowed);
            candidates.Clear();
            closers.Clear();
            unicode.Clear();
            bool eos = false;
            for (int id = 0; id < PaddedVocab; id++)
            {
                if (!allowed[id])
                {
                    continue;
                }

                if (id == tokenizer.EosTokenId)
                {
                    eos = true;
                    continue;
                }

                Assert.True(id < tokenizer.VocabularySize, $"padding id {id} allowed");
                Assert.False(tokenizer.IsSpecial(id), $"special token {id} allowed");
                candidates.Add(id);
                if (isCloser[id])
                {
                    closers.Add(id);
                }

                if (isUnicode[id])
                {
                    unicode.Add(id);
                }
            }

            Assert.True(candidates.Count > 0 || eos, $"dead end after: {Encoding.UTF8.GetString(bytes.ToArray())}");
            if (eos && (candidates.Count == 0 || random.NextDouble() < closeBias))
            {
                constraint.Accept(tokenizer.EosTokenId);
                break;
            }

            double roll = random.NextDouble();
            List<int> pool = roll < closeBias && closers.Count > 0 ? closers
                : roll < closeBias + unicodeBias && unicode.Count > 0 ? unicode
                : candidates;
            int pick = pool[random.Next(pool.Count)];
            constraint.Accept(pick);
            tokens++;
            bytes.AddRange(TokenBytes(pick));
        }

        Assert.True(constraint.IsComplete, $"no complete value within {maxTokens} tokens: {Encoding.UTF8.GetString(bytes.ToArray())}");
        return StrictUtf8.GetString(bytes.ToArray());
    }

    /// <summary>Asserts the text is one JSON value that validates against the schema (JsonSchema.Net as the independent judge).</summary>
    public static void AssertValid(string schemaJson, string text)
    {
        JsonSchema schema = JsonSchema.FromText(schemaJson);
        using JsonDocument document = JsonDocument.Parse(text);
        EvaluationResults results = schema.Evaluate(document.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List, RequireFormatValidation = true });
        Assert.True(results.IsValid, $"{text}\ndoes not validate against\n{schemaJson}\n{string.Join("; ", (results.Details ?? []).Where(d => d.Errors is not null).SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation}: {e.Value}")))}");
    }

    /// <summary>Feeds a text's tokens one by one, asserting each is in the mask; returns the constraint.</summary>
    public static ITokenConstraint Feed(ITokenConstraint constraint, string text)
    {
        var allowed = new bool[PaddedVocab];
        foreach (int id in Tokenizer.Encode(text))
        {
            constraint.FillAllowed(allowed);
            Assert.True(allowed[id], $"token {id} ({Tokenizer.Decode([id], false)}) of {text} not allowed");
            constraint.Accept(id);
        }

        return constraint;
    }

    /// <summary>Whether the matcher takes all of the bytes (byte level, no tokenizer).</summary>
    public static bool Matches(string schemaJson, byte[] text, out bool accepting)
    {
        using JsonDocument document = JsonDocument.Parse(schemaJson);
        JsonMatchState state = JsonMatcher.Start(JsonConstraints.GetOrCompile(document.RootElement));
        accepting = false;
        foreach (byte b in text)
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
