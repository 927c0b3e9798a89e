using System.Diagnostics;
using Cobra.AI.Modeling;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Chat;

/// <summary>The IChatClient contract against the tiny-a golden model.</summary>
public sealed class CobraChatClientTests : IAsyncLifetime
{
    private const string SceneQuestion = "What is going on in this image?";
    private const string SceneAnswer = "onddOnTheassisassis&&& re onwsAnswercle l";
    private const string StoryPrompt = "Write a short story about a cobra.";
    private CobraChatClient client = null!;

    public async Task InitializeAsync() => client = await Load();

    public Task DisposeAsync()
    {
        client.Dispose();
        return Task.CompletedTask;
    }

    internal static Task<CobraChatClient> Load(Action<CobraModelOptions>? configure = null)
    {
        var options = new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" };
        configure?.Invoke(options);
        return CobraChatClient.LoadAsync(options);
    }

    private static DataContent SceneImage() =>
        new(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png")), "image/png");

    private static ChatMessage SceneMessage() => new(ChatRole.User, [new TextContent(SceneQuestion), SceneImage()]);

    private static ChatOptions Sixteen() => new() { MaxOutputTokens = 16 };

    [Fact]
    public async Task Greedy_answer_about_an_image_equals_upstream()
    {
        var response = await client.GetResponseAsync([SceneMessage()], Sixteen());
        Assert.Equal(SceneAnswer, response.Text);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(16 + 20, response.Usage!.InputTokenCount);                 // image tokens + prompt tokens
        Assert.Equal(16, response.Usage.OutputTokenCount);
        Assert.Single(response.Messages);
        Assert.Equal(ChatRole.Assistant, response.Messages[0].Role);
    }

    [Fact]
    public async Task Streaming_updates_share_one_response_and_message_id_and_end_with_finish_and_usage()
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync([SceneMessage()], Sixteen()))
        {
            updates.Add(update);
        }

        Assert.All(updates, u => Assert.Equal(ChatRole.Assistant, u.Role));
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
        Assert.Single(updates.Select(u => u.MessageId).Distinct());
        Assert.NotNull(updates[0].ResponseId);
        Assert.Equal(ChatFinishReason.Length, updates[^1].FinishReason);
        Assert.Single(updates[^1].Contents.OfType<UsageContent>());
        Assert.All(updates[..^1], u => Assert.Null(u.FinishReason));
        Assert.Equal(SceneAnswer, string.Concat(updates.Select(u => u.Text)));
        var aggregated = await client.GetResponseAsync([SceneMessage()], Sixteen());
        Assert.Equal(aggregated.Text, updates.ToChatResponse().Text);
    }

    [Fact]
    public async Task Text_only_answer_equals_upstream()
    {
        var response = await client.GetResponseAsync(StoryPrompt, Sixteen());
        Assert.Equal("on ld not\u001a\u001a\u001anaknaknakand\ufffdimalshishothot", response.Text);
    }

    [Fact]
    public async Task Concurrent_requests_give_the_same_answers_as_sequential_ones()
    {
        string[] prompts = ["Hello there", StoryPrompt, "What is this?", "Tell me more about snakes and ladders."];
        var sequential = new List<string>();
        foreach (var p in prompts)
        {
            sequential.Add((await client.GetResponseAsync(p, new ChatOptions { MaxOutputTokens = 12 })).Text);
        }

        sequential.Add((await client.GetResponseAsync([SceneMessage()], Sixteen())).Text);
        var tasks = prompts.Select(p => client.GetResponseAsync(p, new ChatOptions { MaxOutputTokens = 12 }))
            .Append(client.GetResponseAsync([SceneMessage()], Sixteen()))
            .ToArray();
        var concurrent = (await Task.WhenAll(tasks)).Select(r => r.Text).ToList();
        Assert.Equal(sequential, concurrent);
    }

    [Fact]
    public async Task Cancellation_before_during_and_after_leaves_the_client_usable()
    {
        using var before = new CancellationTokenSource();
        before.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetResponseAsync(StoryPrompt, Sixteen(), before.Token));

        using var during = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in client.GetStreamingResponseAsync(StoryPrompt, new ChatOptions { MaxOutputTokens = 200 }, during.Token))
            {
                if (++seen == 2)
                {
                    during.Cancel();
                }
            }
        });

        Assert.Equal(SceneAnswer, (await client.GetResponseAsync([SceneMessage()], Sixteen())).Text);
    }

    [Fact]
    public async Task Stopping_enumeration_early_abandons_the_generation_and_the_client_stays_usable()
    {
        for (int i = 0; i < 3; i++)
        {
            await foreach (var update in client.GetStreamingResponseAsync(StoryPrompt, new ChatOptions { MaxOutputTokens = 100_000 }))
            {
                if (update.Text.Length > 0)
                {
                    break;
                }
            }
        }

        Assert.Equal(SceneAnswer, (await client.GetResponseAsync([SceneMessage()], Sixteen())).Text);
        var timer = Stopwatch.StartNew();
        while (client.ActiveRequests > 0 && timer.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(20);
        }

        Assert.Equal(0, client.ActiveRequests);
    }

    [Fact]
    public async Task Second_turn_reuses_the_conversation_state_and_matches_a_cold_client()
    {
        var first = await client.GetResponseAsync([SceneMessage()], Sixteen());
        List<ChatMessage> history = [SceneMessage(), .. first.Messages, new ChatMessage(ChatRole.User, "And what else?")];
        var second = await client.GetResponseAsync(history, Sixteen());
        Assert.True(second.Usage!.CachedInputTokenCount >= 16 + 20, $"cached {second.Usage.CachedInputTokenCount}");

        using var cold = await Load(o => o.ConversationCacheSize = 0);
        var coldSecond = await cold.GetResponseAsync(history, Sixteen());
        Assert.Equal(0, coldSecond.Usage!.CachedInputTokenCount);
        Assert.Equal(coldSecond.Text, second.Text);
        Assert.Equal(coldSecond.Usage.InputTokenCount, second.Usage.InputTokenCount);
    }

    [Fact]
    public async Task Same_seed_same_sample_and_sampling_differs_from_greedy()
    {
        ChatOptions Sampled(long seed) => new() { MaxOutputTokens = 12, Temperature = 1.5f, Seed = seed };
        var a = await client.GetResponseAsync(StoryPrompt, Sampled(3));
        var b = await client.GetResponseAsync(StoryPrompt, Sampled(3));
        var greedy = await client.GetResponseAsync(StoryPrompt, new ChatOptions { MaxOutputTokens = 12 });
        Assert.Equal(a.Text, b.Text);
        Assert.NotEqual(greedy.Text, a.Text);
    }

    [Theory]
    [InlineData("sis&")]
    [InlineData("&& re")]
    [InlineData("ddOn")]
    public async Task Stop_sequences_split_across_tokens_end_the_answer_without_leaking(string stop)
    {
        var options = new ChatOptions { MaxOutputTokens = 16, StopSequences = [stop] };
        var response = await client.GetResponseAsync([SceneMessage()], options);
        Assert.Equal(SceneAnswer[..SceneAnswer.IndexOf(stop, StringComparison.Ordinal)].TrimEnd(), response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);

        var streamed = new List<string>();
        await foreach (var u in client.GetStreamingResponseAsync([SceneMessage()], options))
        {
            streamed.Add(u.Text);
        }

        Assert.Equal(response.Text, string.Concat(streamed));
    }

    [Fact]
    public async Task Options_and_messages_are_not_modified()
    {
        var options = new ChatOptions { MaxOutputTokens = 5, StopSequences = ["zzz"], Temperature = 0, AdditionalProperties = new() { ["repetition_penalty"] = 1.2 } };
        var message = SceneMessage();
        var contents = message.Contents.ToList();
        await client.GetResponseAsync([message], options);
        Assert.Equal(["zzz"], options.StopSequences);
        Assert.Equal(5, options.MaxOutputTokens);
        Assert.Single(options.AdditionalProperties!);
        Assert.Equal(contents, message.Contents);
    }

    [Fact]
    public async Task Repetition_penalty_changes_a_repetitive_answer()
    {
        var plain = await client.GetResponseAsync([SceneMessage()], Sixteen());
        var penalised = await client.GetResponseAsync([SceneMessage()], new ChatOptions { MaxOutputTokens = 16, AdditionalProperties = new() { ["repetition_penalty"] = 3.0 } });
        Assert.NotEqual(plain.Text, penalised.Text);
    }

    [Fact]
    public void GetService_returns_metadata_the_client_and_null_otherwise()
    {
        var metadata = client.GetService<ChatClientMetadata>();
        Assert.Equal("cobra", metadata!.ProviderName);
        Assert.Equal("cobra+3b", metadata.DefaultModelId);
        Assert.Same(client, client.GetService<CobraChatClient>());
        Assert.Same(client, client.GetService<IChatClient>());
        Assert.NotNull(client.GetService<CobraModel>());
        Assert.Null(client.GetService<Uri>());
        Assert.Null(client.GetService(typeof(ChatClientMetadata), "key"));
    }

    [Fact]
    public async Task Dispose_during_a_long_generation_returns_promptly_and_fails_the_request()
    {
        var own = await Load();
        var running = own.GetResponseAsync(StoryPrompt, new ChatOptions { MaxOutputTokens = 1_000_000 });
        while (own.ActiveRequests == 0 && !running.IsCompleted)
        {
            await Task.Delay(10);
        }

        var timer = Stopwatch.StartNew();
        own.Dispose();
        Assert.True(timer.Elapsed < TimeSpan.FromSeconds(10), $"Dispose took {timer.Elapsed}");
        await Assert.ThrowsAsync<ObjectDisposedException>(() => running);
    }

    [Fact]
    public async Task Dispose_is_idempotent_and_later_calls_fail_clearly()
    {
        var own = await Load();
        own.Dispose();
        own.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => own.GetResponseAsync("hi"));
    }

    [Fact]
    public async Task System_text_is_prepended_by_default_and_policies_apply()
    {
        List<ChatMessage> withSystem = [new(ChatRole.System, "Be brief."), new(ChatRole.User, StoryPrompt)];
        var prepended = await client.GetResponseAsync(withSystem, Sixteen());
        var plain = await client.GetResponseAsync(StoryPrompt, Sixteen());
        Assert.True(prepended.Usage!.InputTokenCount > plain.Usage!.InputTokenCount);

        var viaInstructions = await client.GetResponseAsync(StoryPrompt, new ChatOptions { MaxOutputTokens = 16, Instructions = "Be brief." });
        Assert.Equal(prepended.Text, viaInstructions.Text);

        using var ignoring = await Load(o => o.SystemPrompts = SystemPromptPolicy.Ignore);
        Assert.Equal(plain.Text, (await ignoring.GetResponseAsync(withSystem, Sixteen())).Text);
        using var rejecting = await Load(o => o.SystemPrompts = SystemPromptPolicy.Reject);
        var e = await Assert.ThrowsAsync<ArgumentException>(() => rejecting.GetResponseAsync(withSystem, Sixteen()));
        Assert.Contains("SystemPrompts", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Conversations_that_cannot_be_answered_are_rejected_clearly()
    {
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.Assistant, "hi")]));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "hi"), new ChatMessage(ChatRole.Assistant, "hello")]));
        await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync("hi", new ChatOptions { ToolMode = ChatToolMode.RequireAny }));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync("hi", new ChatOptions { Temperature = -1 }));
    }

    [Fact]
    public async Task Latest_image_is_used_unless_several_are_rejected()
    {
        var badge = new DataContent(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "badge_64x64_rgba.png")), "image/png");
        List<ChatMessage> twoImages = [new(ChatRole.User, [badge, SceneImage(), new TextContent(SceneQuestion)])];
        Assert.Equal(SceneAnswer, (await client.GetResponseAsync(twoImages, Sixteen())).Text);
        using var strict = await Load(o => o.MultipleImages = MultipleImagePolicy.Reject);
        await Assert.ThrowsAsync<ArgumentException>(() => strict.GetResponseAsync(twoImages, Sixteen()));
    }
}
