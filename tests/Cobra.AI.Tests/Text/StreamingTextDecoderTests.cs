using Cobra.AI.Text;
using Xunit;

namespace Cobra.AI.Tests.Text;

/// <summary>
/// The incremental detokeniser against the whole-sequence decode it must reproduce: every prefix of the streamed
/// text is a prefix of the final answer, and the final answer is <see cref="CobraTokenizer.DecodeForOutput"/>
/// cut at the first stop sequence.
/// </summary>
public sealed class StreamingTextDecoderTests
{
    /// <summary>The reference: decode everything, cut at the earliest stop sequence, strip the end there.</summary>
    private static (string Text, int StoppedAt) Reference(CobraTokenizer tokenizer, IReadOnlyList<int> ids, IReadOnlyList<string> stops)
    {
        for (int n = 1; n <= ids.Count; n++)
        {
            string text = tokenizer.DecodeForOutput(ids.Take(n));
            int cut = stops.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
            if (cut >= 0)
            {
                return (PythonString.StripEnd(text[..cut]), n);
            }
        }

        return (tokenizer.DecodeForOutput(ids), -1);
    }

    private static void AssertStreams(CobraTokenizer tokenizer, IReadOnlyList<int> ids, IReadOnlyList<string> stops)
    {
        var (expected, stoppedAt) = Reference(tokenizer, ids, stops);
        var decoder = new StreamingTextDecoder(tokenizer, stops);
        string streamed = "";
        for (int i = 0; i < ids.Count && !decoder.Stopped; i++)
        {
            streamed += decoder.Add(ids[i]);
            Assert.True(expected.StartsWith(streamed, StringComparison.Ordinal), $"after {i + 1} ids the stream '{streamed}' is not a prefix of '{expected}'");
            if (decoder.Stopped)
            {
                Assert.Equal(stoppedAt, i + 1);
            }
        }

        streamed += decoder.Finish();
        Assert.Equal(expected, streamed);
        Assert.Equal(expected, decoder.Text);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Random_id_sequences_stream_exactly_the_whole_decode(int seed)
    {
        var tokenizer = TextFixtures.NeoX;
        var rng = new Random(seed);

        // Ids of texts full of clean-up patterns, spaces, multi-byte characters and stop-sequence material, shuffled in pieces.
        var material = tokenizer.Encode(" Hello , world ! It 's  a  cat n't . Ünïcødé 🐍 cobra\n\n User: ok ' s ? 're 've 'm . . end   ").ToArray();
        for (int round = 0; round < 40; round++)
        {
            var ids = Enumerable.Range(0, rng.Next(1, 40)).Select(_ => rng.Next(4) == 0 ? rng.Next(0, tokenizer.VocabularySize + 8) : material[rng.Next(material.Length)]).ToArray();
            string[] stops = (round % 3) switch
            {
                0 => [],
                1 => ["\n\n"],
                _ => ["User:", " ."],
            };
            AssertStreams(tokenizer, ids, stops);
        }
    }

    [Fact]
    public void Clean_up_patterns_split_across_tokens_and_trailing_space_are_held_back()
    {
        var tokenizer = TextFixtures.NeoX;
        AssertStreams(tokenizer, tokenizer.Encode("I do n't know , really . Yes !"), []);
        AssertStreams(tokenizer, tokenizer.Encode("  leading and trailing   "), []);
        AssertStreams(tokenizer, tokenizer.Encode("x ' y"), []);

        // A multi-byte character split over tokens never streams a replacement character.
        var snake = tokenizer.Encode("🐍🐍");
        var decoder = new StreamingTextDecoder(tokenizer, []);
        foreach (int id in snake)
        {
            Assert.DoesNotContain('\uFFFD', decoder.Add(id));
        }

        Assert.Equal("🐍🐍", decoder.Text + decoder.Finish());
    }

    [Fact]
    public void A_stop_sequence_across_tokens_ends_the_answer_before_it()
    {
        var tokenizer = TextFixtures.NeoX;
        AssertStreams(tokenizer, tokenizer.Encode("The answer is 42.\nUser: more"), ["\nUser:"]);
        AssertStreams(tokenizer, tokenizer.Encode("abc STOP def"), ["STOP", "abc S"]);
    }
}
