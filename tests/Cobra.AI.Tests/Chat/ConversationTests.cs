using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Chat;

/// <summary>ConversationId continuation, prefix snapshots, forks and log-probabilities through the public IChatClient.</summary>
public sealed class ConversationTests : IAsyncLifetime
{
    private CobraChatClient client = null!;

    public async Task InitializeAsync() => client = await CobraChatClientTests.Load();

    public Task DisposeAsync()
    {
        client.Dispose();
        return Task.CompletedTask;
    }

    private static DataContent Scene() => new(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png")), "image/png");

    private static ChatOptions Tokens(int n) => new() { MaxOutputTokens = n };

    [Fact]
    public async Task Every_response_carries_a_conversation_id_and_continuing_it_equals_re_sending_the_whole_history()
    {
        var first = new ChatMessage(ChatRole.User, [new TextContent("What is going on in this image?"), Scene()]);
        var turn1 = await client.GetResponseAsync([first], Tokens(6));
        Assert.False(string.IsNullOrEmpty(turn1.ConversationId));

        var next = new ChatMessage(ChatRole.User, "And what else?");
        var continued = await client.GetResponseAsync([next], new ChatOptions { MaxOutputTokens = 8, ConversationId = turn1.ConversationId });
        Assert.Equal(turn1.ConversationId, continued.ConversationId);
        Assert.True(continued.Usage!.CachedInputTokenCount > 0, "the continuation recomputed its history");

        using var fresh = await CobraChatClientTests.Load();
        var full = await fresh.GetResponseAsync([first, .. turn1.Messages, next], Tokens(8));
        Assert.Equal(full.Text, continued.Text);
        Assert.Equal(full.Usage!.InputTokenCount, continued.Usage.InputTokenCount);

        // A third turn continues from the second.
        var third = new ChatMessage(ChatRole.User, "Thanks.");
        var turn3 = await client.GetResponseAsync([third], new ChatOptions { MaxOutputTokens = 5, ConversationId = turn1.ConversationId });
        var full3 = await fresh.GetResponseAsync([first, .. turn1.Messages, next, .. continued.Messages, third], Tokens(5));
        Assert.Equal(full3.Text, turn3.Text);
    }

    [Fact]
    public async Task An_unknown_or_evicted_conversation_id_is_a_clear_error()
    {
        var e = await Assert.ThrowsAsync<CobraConversationNotFoundException>(() =>
            client.GetResponseAsync([new ChatMessage(ChatRole.User, "hi")], new ChatOptions { ConversationId = "nope" }));
        Assert.Contains("nope", e.Message, StringComparison.Ordinal);

        using var small = await CobraChatClientTests.Load(o => o.MaxConversations = 1);
        var a = await small.GetResponseAsync("first", Tokens(2));
        await small.GetResponseAsync("second", Tokens(2));
        await Assert.ThrowsAsync<CobraConversationNotFoundException>(() =>
            small.GetResponseAsync([new ChatMessage(ChatRole.User, "again")], new ChatOptions { ConversationId = a.ConversationId }));
    }

    [Fact]
    public async Task A_new_conversation_about_a_seen_image_reuses_the_image_snapshot_and_answers_as_a_cold_client()
    {
        await client.GetResponseAsync([new ChatMessage(ChatRole.User, [new TextContent("Describe it."), Scene()])], Tokens(3));
        var question = new ChatMessage(ChatRole.User, [new TextContent("Is there a red circle?"), Scene()]);
        var warm = await client.GetResponseAsync([question], Tokens(8));
        using var cold = await CobraChatClientTests.Load(o => o.ConversationCacheSize = 0);
        var reference = await cold.GetResponseAsync([question], Tokens(8));
        Assert.Equal(reference.Text, warm.Text);
        Assert.True(warm.Usage!.CachedInputTokenCount >= 16, $"cached {warm.Usage.CachedInputTokenCount} tokens: the towers ran again");
        Assert.Equal(0, reference.Usage!.CachedInputTokenCount);
        Assert.True(client.GetStatistics().StateCacheHits > 0);
    }

    [Fact]
    public async Task N_choices_come_back_as_one_message_each_and_are_reproducible_with_a_seed()
    {
        var options = new ChatOptions { MaxOutputTokens = 8, Temperature = 1.2f, Seed = 5, AdditionalProperties = new() { [CobraAdditionalProperties.ChoiceCount] = 3 } };
        var response = await client.GetResponseAsync("Tell me a story.", options);
        Assert.Equal(3, response.Messages.Count);
        Assert.Equal([0, 1, 2], response.Messages.Select(m => (int)m.AdditionalProperties![CobraAdditionalProperties.ChoiceIndex]!));
        var again = await client.GetResponseAsync("Tell me a story.", options);
        Assert.Equal(response.Messages.Select(m => m.Text), again.Messages.Select(m => m.Text));

        var single = await client.GetResponseAsync("Tell me a story.", new ChatOptions { MaxOutputTokens = 8, Temperature = 1.2f, Seed = 5 });
        Assert.Equal(single.Text, response.Messages[0].Text);

        var streamed = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync("Tell me a story.", options))
        {
            streamed.Add(update);
        }

        Assert.Equal(3, streamed.Where(u => u.FinishReason is not null).Select(u => u.AdditionalProperties![CobraAdditionalProperties.ChoiceIndex]).Distinct().Count());
        Assert.Single(streamed.SelectMany(u => u.Contents).OfType<UsageContent>());

        var tooMany = new ChatOptions { AdditionalProperties = new() { [CobraAdditionalProperties.ChoiceCount] = 99 } };
        var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync("x", tooMany));
        Assert.Contains("MaxChoices", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Logprobs_arrive_with_the_updates_for_every_generated_token()
    {
        var options = new ChatOptions { MaxOutputTokens = 6, AdditionalProperties = new() { [CobraAdditionalProperties.Logprobs] = true, [CobraAdditionalProperties.TopLogprobs] = 3 } };
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync("Hello there", options))
        {
            updates.Add(update);
        }

        var logprobs = updates.Where(u => u.AdditionalProperties?.ContainsKey(CobraAdditionalProperties.TokenLogprobs) == true)
            .SelectMany(u => (IReadOnlyList<CobraTokenLogprob>)u.AdditionalProperties![CobraAdditionalProperties.TokenLogprobs]!).ToList();
        var usage = updates.SelectMany(u => u.Contents).OfType<UsageContent>().Single();
        Assert.Equal(usage.Details.OutputTokenCount, logprobs.Count);
        Assert.All(logprobs, l =>
        {
            Assert.InRange(l.Logprob, double.NegativeInfinity, 0);
            Assert.Equal(3, l.TopLogprobs.Count);
            Assert.True(l.TopLogprobs[0].Logprob >= l.Logprob - 1e-6, "greedy picks the most likely token");
        });
    }

    [Fact]
    public async Task A_prompt_over_the_character_limit_is_refused_before_tokenising_and_the_client_stays_healthy()
    {
        using var small = await CobraChatClientTests.Load(o => o.MaxPromptCharacters = 1000);
        var e = await Assert.ThrowsAsync<ArgumentException>(() => small.GetResponseAsync(new string('a', 1001), Tokens(2)));
        Assert.Contains("MaxPromptCharacters", e.Message, StringComparison.Ordinal);
        Assert.False(string.IsNullOrEmpty((await small.GetResponseAsync(new string('a', 900), Tokens(2))).ConversationId));
    }

    [Fact]
    public async Task Staggered_concurrent_requests_equal_sequential_ones()
    {
        var prompts = Enumerable.Range(0, 8).Select(i => i % 2 == 0
            ? new ChatMessage(ChatRole.User, [new TextContent($"Question {i}?"), Scene()])
            : new ChatMessage(ChatRole.User, $"Text {i} only")).ToArray();
        using var sequentialClient = await CobraChatClientTests.Load(o => o.ConversationCacheSize = 0);
        var sequential = new List<string>();
        foreach (var p in prompts)
        {
            sequential.Add((await sequentialClient.GetResponseAsync([p], Tokens(6 + prompts.ToList().IndexOf(p)))).Text);
        }

        var concurrent = await Task.WhenAll(prompts.Select(async (p, i) =>
        {
            await Task.Delay(i * 15);
            return (await client.GetResponseAsync([p], Tokens(6 + i))).Text;
        }));
        Assert.Equal(sequential, concurrent);
    }
}
