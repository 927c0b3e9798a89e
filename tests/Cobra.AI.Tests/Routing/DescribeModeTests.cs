using Microsoft.Extensions.AI;
using Xunit;
using static Cobra.AI.Tests.Routing.RoutingImages;

namespace Cobra.AI.Tests.Routing;

/// <summary>Describe mode: a text-only main client gets Cobra's answers about the images as marked text.</summary>
public sealed class DescribeModeTests : IAsyncLifetime
{
    /// <summary>What a description call uses unless configured: greedy, 256 tokens.</summary>
    private static readonly ChatOptions DescriptionDefaults = new() { MaxOutputTokens = 256 };
    private CobraChatClient cobra = null!;
    private RecordingClient eyes = null!;
    private ScriptedMainClient main = null!;
    private IChatClient described = null!;

    public async Task InitializeAsync()
    {
        cobra = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" });
        eyes = new RecordingClient(cobra);
        main = new ScriptedMainClient();
        described = main.AsBuilder().UseCobraVision(eyes, o => o.Mode = CobraVisionMode.Describe).Build();
    }

    public Task DisposeAsync()
    {
        described.Dispose();
        cobra.Dispose();
        return Task.CompletedTask;
    }

    private static string MarkedText(ChatMessage message) =>
        Assert.Single(message.Contents.OfType<TextContent>(), t => t.Text.StartsWith(CobraVision.DescriptionPrefix, StringComparison.Ordinal)).Text;

    [Fact]
    public async Task The_main_client_sees_text_only_and_the_description_equals_a_direct_cobra_call()
    {
        var direct = await cobra.GetResponseAsync([Ask(Question, Scene())], DescriptionDefaults);
        var answer = await described.GetResponseAsync([Ask(Question, Scene())], new ChatOptions { Temperature = 0.7f, MaxOutputTokens = 9 });

        var seen = main.Calls.Single();
        Assert.False(HasImage(seen.Messages));
        var user = Assert.Single(seen.Messages);
        Assert.Equal(ChatRole.User, user.Role);
        Assert.Equal(Question, user.Contents.OfType<TextContent>().First().Text);     // the user's own text stays
        Assert.Equal(CobraVision.DescriptionPrefix + direct.Text + CobraVision.DescriptionSuffix, MarkedText(user));
        Assert.Equal("main saw: " + user.Text, answer.Text);

        // The caller's options went to the main client; Cobra got the description settings and the question.
        Assert.Equal(0.7f, seen.Options!.Temperature);
        Assert.Equal(9, seen.Options.MaxOutputTokens);
        var asked = eyes.Calls.Single();
        Assert.Equal(256, asked.Options!.MaxOutputTokens);
        Assert.Null(asked.Options.Temperature);
        Assert.Equal(Question, Assert.Single(asked.Messages).Text);

        // Usage: the main client's part plus Cobra's, with Cobra's part named.
        Assert.Equal(ScriptedMainClient.Spent.InputTokenCount + direct.Usage!.InputTokenCount, answer.Usage!.InputTokenCount);
        Assert.Equal(ScriptedMainClient.Spent.OutputTokenCount + direct.Usage.OutputTokenCount, answer.Usage.OutputTokenCount);
        Assert.Equal(direct.Usage.InputTokenCount, answer.Usage.AdditionalCounts![CobraVision.VisionInputTokensKey]);
        Assert.Equal(direct.Usage.OutputTokenCount, answer.Usage.AdditionalCounts[CobraVision.VisionOutputTokensKey]);
    }

    [Fact]
    public async Task Every_image_in_the_conversation_is_answered_with_the_latest_question_and_the_caller_history_is_untouched()
    {
        const string followUp = "Which colours do you see?";
        List<ChatMessage> history = [Ask(Question, Scene()), new(ChatRole.Assistant, "A scene."), Ask("And this one?", Badge()), new(ChatRole.Assistant, "A badge."), new(ChatRole.User, followUp)];
        var scene = await cobra.GetResponseAsync([Ask(followUp, Scene())], DescriptionDefaults);
        var badge = await cobra.GetResponseAsync([Ask(followUp, Badge())], DescriptionDefaults);

        await described.GetResponseAsync(history);
        var seen = main.Calls.Single().Messages;
        Assert.False(HasImage(seen));
        Assert.Equal(history.Select(m => m.Role), seen.Select(m => m.Role));
        Assert.Equal(CobraVision.DescriptionPrefix + scene.Text + CobraVision.DescriptionSuffix, MarkedText(seen[0]));
        Assert.Equal(CobraVision.DescriptionPrefix + badge.Text + CobraVision.DescriptionSuffix, MarkedText(seen[2]));
        Assert.Same(history[1], seen[1]);
        Assert.Same(history[4], seen[4]);
        Assert.Equal(2, eyes.Calls.Count);
        Assert.All(eyes.Calls, c => Assert.Equal(followUp, c.Messages.Single().Text));
        Assert.True(HasImage(history));                                   // the caller's messages were not modified
    }

    [Fact]
    public async Task Descriptions_are_cached_by_image_and_question()
    {
        await described.GetResponseAsync([Ask(Question, Scene())]);
        await described.GetResponseAsync([Ask(Question, Scene())]);                               // same bytes, new instance
        await described.GetResponseAsync([Ask(Question, new UriContent("data:image/png;base64," + Convert.ToBase64String(Scene().Data.ToArray()), "image/png"))]);
        Assert.Single(eyes.Calls);
        Assert.Equal(main.Calls.First().Messages.Single().Text, main.Calls.Last().Messages.Single().Text);

        var second = await described.GetResponseAsync([Ask(Question, Scene())]);
        Assert.Equal(ScriptedMainClient.Spent.InputTokenCount, second.Usage!.InputTokenCount);   // a cached description costs nothing
        Assert.Null(second.Usage.AdditionalCounts);

        await described.GetResponseAsync([Ask("Is it daytime?", Scene())]);
        await described.GetResponseAsync([Ask(Question, Badge())]);
        Assert.Equal(3, eyes.Calls.Count);
    }

    [Fact]
    public async Task A_long_conversation_about_one_image_pays_for_the_image_once()
    {
        const int imageTokens = 16;                                       // tiny-a: one image is 16 positions
        List<ChatMessage> history = [Ask(Question, Scene())];
        var first = await described.GetResponseAsync(history);
        Assert.Equal(0, first.Usage!.CachedInputTokenCount ?? 0);
        foreach (var followUp in new[] { "What colour is the sky?", "Is anyone there?", "Describe the light." })
        {
            history.AddRange((await described.GetResponseAsync(history)).Messages);
            history.Add(new ChatMessage(ChatRole.User, followUp));
        }

        var last = await described.GetResponseAsync(history);
        Assert.Equal(4, eyes.Calls.Count);                                // one description per question; the repeated first question came from the cache
        Assert.True(last.Usage!.CachedInputTokenCount >= imageTokens, $"cached {last.Usage.CachedInputTokenCount}");
        var stats = cobra.GetStatistics();
        Assert.True(stats.CachedPromptTokens >= 3 * imageTokens, $"cached prompt tokens {stats.CachedPromptTokens}");
    }

    [Fact]
    public async Task The_cache_is_bounded_least_recently_used_and_can_be_off()
    {
        using var one = new ScriptedMainClient().AsBuilder().UseCobraVision(eyes, o => { o.Mode = CobraVisionMode.Describe; o.DescriptionCacheSize = 1; }).Build();
        foreach (var image in new[] { Scene(), Scene(), Badge(), Scene() })
        {
            await one.GetResponseAsync([Ask(Question, image)]);
        }

        Assert.Equal(3, eyes.Calls.Count);                                // scene, (hit), badge evicts scene, scene again

        using var off = new ScriptedMainClient().AsBuilder().UseCobraVision(eyes, o => { o.Mode = CobraVisionMode.Describe; o.DescriptionCacheSize = 0; }).Build();
        await off.GetResponseAsync([Ask(Question, Scene())]);
        await off.GetResponseAsync([Ask(Question, Scene())]);
        Assert.Equal(5, eyes.Calls.Count);
    }

    [Fact]
    public async Task Streaming_matches_the_non_streaming_answer_and_adds_cobras_usage()
    {
        var whole = await described.GetResponseAsync([Ask(Question, Scene())]);
        using var fresh = new ScriptedMainClient().AsBuilder().UseCobraVision(cobra, o => o.Mode = CobraVisionMode.Describe).Build();
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in fresh.GetStreamingResponseAsync([Ask(Question, Scene())]))
        {
            updates.Add(update);
        }

        var streamed = updates.ToChatResponse();
        Assert.Equal(whole.Text, streamed.Text);
        Assert.Single(streamed.Messages);
        Assert.Equal(whole.Usage!.InputTokenCount, streamed.Usage!.InputTokenCount);
        Assert.Equal(whole.Usage.OutputTokenCount, streamed.Usage.OutputTokenCount);
        Assert.Equal(whole.Usage.AdditionalCounts![CobraVision.VisionInputTokensKey], streamed.Usage.AdditionalCounts![CobraVision.VisionInputTokensKey]);
    }

    [Fact]
    public async Task Text_only_conversations_pass_through_without_cobra()
    {
        List<ChatMessage> messages = [new(ChatRole.User, "Just text")];
        var answer = await described.GetResponseAsync(messages);
        Assert.Equal("main saw: Just text", answer.Text);
        Assert.Same(messages[0], main.Calls.Single().Messages[0]);
        Assert.Empty(eyes.Calls);
        Assert.Equal(ScriptedMainClient.Spent.InputTokenCount, answer.Usage!.InputTokenCount);
    }

    [Fact]
    public async Task A_refused_image_fails_as_a_direct_call_does_before_the_main_client_is_called()
    {
        var bad = new DataContent(new byte[] { 0x89, 0x50, 0x4E, 0x47, 1, 2, 3 }, "image/png");
        var direct = await Assert.ThrowsAnyAsync<Exception>(() => cobra.GetResponseAsync([Ask(Question, bad)], DescriptionDefaults));
        var viaDescribe = await Assert.ThrowsAnyAsync<Exception>(() => described.GetResponseAsync([Ask(Question, bad)]));
        Assert.Equal(direct.GetType(), viaDescribe.GetType());
        Assert.Equal(direct.Message, viaDescribe.Message);

        var streaming = await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await foreach (var update in described.GetStreamingResponseAsync([Ask(Question, Scene()), new(ChatRole.Assistant, "ok"), Ask(Question, bad)]))
            {
            }
        });
        Assert.Equal(direct.GetType(), streaming.GetType());
        Assert.Empty(main.Calls);
    }

    [Fact]
    public async Task Too_many_images_are_refused_naming_the_limit()
    {
        using var client = main.AsBuilder().UseCobraVision(eyes, o => { o.Mode = CobraVisionMode.Describe; o.MaxDescribedImages = 1; }).Build();
        var error = await Assert.ThrowsAsync<CobraImageLimitException>(() => client.GetResponseAsync([new(ChatRole.User, [new TextContent(Question), Scene(), Badge()])]));
        Assert.Equal(nameof(CobraVisionOptions.MaxDescribedImages), error.LimitName);
        Assert.Contains("MaxDescribedImages", error.Message, StringComparison.Ordinal);
        Assert.Empty(main.Calls);
        Assert.Empty(eyes.Calls);

        await client.GetResponseAsync([new(ChatRole.User, [new TextContent(Question), Scene(), Scene()])]);   // one distinct image
        Assert.Single(eyes.Calls);
    }

    [Fact]
    public async Task Cancellation_reaches_cobra_and_the_main_client()
    {
        using var canceled = new CancellationTokenSource();
        await canceled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => described.GetResponseAsync([Ask(Question, Scene())], null, canceled.Token));
        Assert.Empty(main.Calls);
        Assert.True(eyes.Calls.Single().Token.IsCancellationRequested);

        var started = new TaskCompletionSource();
        using var blocking = new ScriptedMainClient { BlockUntilCanceled = started };
        using var client = blocking.AsBuilder().UseCobraVision(eyes, o => o.Mode = CobraVisionMode.Describe).Build();
        using var cts = new CancellationTokenSource();
        var pending = client.GetResponseAsync([Ask(Question, Scene())], null, cts.Token);
        await started.Task;
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending);
        Assert.True(blocking.Calls.Single().Token.IsCancellationRequested);
    }

    [Fact]
    public async Task Function_invocation_passes_through_and_the_tool_loop_reuses_the_description()
    {
        int invoked = 0;
        var tool = AIFunctionFactory.Create((string city) => { invoked++; return $"sunny in {city}"; }, "weather");
        var toolMain = new ScriptedMainClient { CallTools = true };
        using var agent = toolMain.AsBuilder().UseFunctionInvocation().UseCobraVision(eyes, o => o.Mode = CobraVisionMode.Describe).Build();
        var answer = await agent.GetResponseAsync([Ask("Is the weather in this picture like Lisbon's?", Scene())], new ChatOptions { Tools = [tool] });

        Assert.Equal(1, invoked);
        Assert.Equal("the tool said sunny in Lisbon", answer.Text);
        Assert.Equal(2, toolMain.Calls.Count);                            // call the tool, then answer
        Assert.All(toolMain.Calls, c => Assert.False(HasImage(c.Messages)));
        Assert.All(toolMain.Calls, c => Assert.Same(tool, Assert.Single(c.Options!.Tools!)));
        Assert.Single(eyes.Calls);                                        // the second round's description came from the cache
        Assert.Null(eyes.Calls.Single().Options!.Tools);
    }

    [Fact]
    public async Task A_replaced_rule_can_keep_images_away_from_cobra()
    {
#pragma warning disable MEAI001 // NeedsVision takes the experimental RoutingContext.
        using var client = main.AsBuilder().UseCobraVision(eyes, o => { o.Mode = CobraVisionMode.Describe; o.NeedsVision = _ => false; }).Build();
#pragma warning restore MEAI001
        List<ChatMessage> messages = [Ask(Question, Scene())];
        await client.GetResponseAsync(messages);
        Assert.Empty(eyes.Calls);
        Assert.Same(messages[0], main.Calls.Single().Messages[0]);
    }
}
