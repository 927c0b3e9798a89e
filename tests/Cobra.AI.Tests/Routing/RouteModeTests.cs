using Microsoft.Extensions.AI;
using Xunit;
using static Cobra.AI.Tests.Routing.RoutingImages;

#pragma warning disable MEAI001 // CobraVisionOptions.NeedsVision takes the abstractions' experimental RoutingContext.

namespace Cobra.AI.Tests.Routing;

/// <summary>Route mode: image turns go to the real tiny Cobra, everything else to a scripted main client.</summary>
public sealed class RouteModeTests : IAsyncLifetime
{
    private static readonly ChatOptions Sixteen = new() { MaxOutputTokens = 16 };
    private CobraChatClient cobra = null!;
    private RecordingClient eyes = null!;
    private ScriptedMainClient main = null!;
    private IChatClient routed = null!;

    public async Task InitializeAsync()
    {
        cobra = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" });
        eyes = new RecordingClient(cobra);
        main = new ScriptedMainClient();
        routed = main.AsBuilder().UseCobraVision(eyes).Build();
    }

    public Task DisposeAsync()
    {
        routed.Dispose();
        cobra.Dispose();
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Text_turns_never_reach_cobra_and_image_turns_do_with_the_direct_answer()
    {
        var text = await routed.GetResponseAsync("Hello, who are you?", Sixteen);
        Assert.Equal("main saw: Hello, who are you?", text.Text);
        Assert.Empty(eyes.Calls);

        var direct = await cobra.GetResponseAsync([Ask(Question, Scene())], Sixteen);
        var image = await routed.GetResponseAsync([Ask(Question, Scene())], Sixteen);
        Assert.Equal(direct.Text, image.Text);
        Assert.Equal(direct.Usage!.InputTokenCount, image.Usage!.InputTokenCount);
        Assert.Single(eyes.Calls);
        Assert.Single(main.Calls);                                        // still only the text turn
        Assert.True(HasImage(eyes.Calls.Single().Messages));
    }

    [Fact]
    public async Task The_default_rule_reads_the_current_turn_and_a_replaced_rule_can_read_the_whole_conversation()
    {
        List<ChatMessage> history = [Ask(Question, Scene()), new(ChatRole.Assistant, "A scene."), new(ChatRole.User, "Thanks, write a haiku.")];
        await routed.GetResponseAsync(history, Sixteen);
        Assert.Empty(eyes.Calls);
        var seen = main.Calls.Single().Messages;
        Assert.False(HasImage(seen));                                     // a text-only main model accepts the conversation
        Assert.Equal([Question, CobraVision.OmittedImageText], seen[0].Contents.OfType<TextContent>().Select(t => t.Text));
        Assert.Same(history[1], seen[1]);
        Assert.Same(history[2], seen[2]);
        Assert.True(HasImage(history));                                   // the caller's messages are not modified

        var seeing = new ScriptedMainClient();
        using (var keep = seeing.AsBuilder().UseCobraVision(eyes, o => o.KeepImagesForMainClient = true).Build())
        {
            await keep.GetResponseAsync(history, Sixteen);
        }

        Assert.Same(history[0], seeing.Calls.Single().Messages[0]);
        Assert.Empty(eyes.Calls);

        using var sticky = new ScriptedMainClient().AsBuilder().UseCobraVision(eyes, o => o.NeedsVision = CobraVision.ConversationHasImage).Build();
        await sticky.GetResponseAsync(history, Sixteen);
        Assert.Single(eyes.Calls);
    }

    [Fact]
    public async Task The_rule_sees_the_messages_and_the_options()
    {
        var seen = new List<(int Count, float? Temperature)>();
        using var client = main.AsBuilder().UseCobraVision(eyes, o => o.NeedsVision = context =>
        {
            seen.Add((context.Messages.Count(), context.ChatOptions?.Temperature));
            return context.ChatOptions?.AdditionalProperties?.ContainsKey("look") == true;
        }).Build();

        await client.GetResponseAsync("plain", new ChatOptions { Temperature = 0.5f });
        Assert.Empty(eyes.Calls);
        var forced = await client.GetResponseAsync("Describe a cobra.", new ChatOptions { MaxOutputTokens = 4, AdditionalProperties = new() { ["look"] = true } });
        Assert.Single(eyes.Calls);
        Assert.Equal(4, forced.Usage!.OutputTokenCount);
        Assert.Equal([(1, 0.5f), (1, null)], seen);
    }

    [Fact]
    public async Task Options_and_tools_reach_whichever_client_answers_untouched()
    {
        var tool = AIFunctionFactory.Create((string city) => "sunny", "weather");
        var options = new ChatOptions { Temperature = 0.25f, MaxOutputTokens = 7, Tools = [tool], ResponseFormat = ChatResponseFormat.Json, StopSequences = ["zz"] };
        await routed.GetResponseAsync("Weather?", options);
        var seen = main.Calls.Single().Options!;
        Assert.NotSame(options, seen);                                    // RoutingChatClient clones
        Assert.Equal(0.25f, seen.Temperature);
        Assert.Equal(7, seen.MaxOutputTokens);
        Assert.Same(tool, Assert.Single(seen.Tools!));
        Assert.Same(ChatResponseFormat.Json, seen.ResponseFormat);

        var answer = await routed.GetResponseAsync([Ask(Question, Scene())], new ChatOptions { MaxOutputTokens = 5, Tools = [tool] });
        Assert.Equal(5, answer.Usage!.OutputTokenCount);
        Assert.Equal(5, eyes.Calls.Single().Options!.MaxOutputTokens);
        Assert.Same(tool, Assert.Single(eyes.Calls.Single().Options!.Tools!));
    }

    [Fact]
    public async Task A_main_client_conversation_id_stays_with_the_main_client()
    {
        var options = new ChatOptions { MaxOutputTokens = 16, ConversationId = "main-thread-1" };
        var direct = await cobra.GetResponseAsync([Ask(Question, Scene())], Sixteen);
        var answer = await routed.GetResponseAsync([Ask(Question, Scene())], options);
        Assert.Equal(direct.Text, answer.Text);
        Assert.Null(eyes.Calls.Single().Options!.ConversationId);
        Assert.Null(answer.ConversationId);
        Assert.Equal("main-thread-1", options.ConversationId);

        await routed.GetResponseAsync("and now?", options);
        Assert.Equal("main-thread-1", main.Calls.Single().Options!.ConversationId);
    }

    [Fact]
    public async Task Streaming_image_turns_stream_from_cobra_and_name_cobras_usage()
    {
        var direct = await cobra.GetResponseAsync([Ask(Question, Scene())], Sixteen);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in routed.GetStreamingResponseAsync([Ask(Question, Scene())], Sixteen))
        {
            updates.Add(update);
        }

        Assert.True(updates.Count > 1);
        Assert.True(eyes.Calls.Single().Streaming);
        var response = updates.ToChatResponse();
        Assert.Equal(direct.Text, response.Text);
        Assert.Equal(direct.Usage!.InputTokenCount, response.Usage!.AdditionalCounts![CobraVision.VisionInputTokensKey]);
        Assert.Equal(16, response.Usage.AdditionalCounts[CobraVision.VisionOutputTokensKey]);

        var text = new List<ChatResponseUpdate>();
        await foreach (var update in routed.GetStreamingResponseAsync("stream me", Sixteen))
        {
            text.Add(update);
        }

        Assert.Equal("main saw: stream me", text.ToChatResponse().Text);
        Assert.True(main.Calls.Single().Streaming);
    }

    [Fact]
    public async Task A_refused_image_fails_as_a_direct_call_does()
    {
        var bad = new DataContent("not an image at all"u8.ToArray(), "image/png");
        var direct = await Assert.ThrowsAnyAsync<Exception>(() => cobra.GetResponseAsync([Ask(Question, bad)], Sixteen));
        var viaRoute = await Assert.ThrowsAnyAsync<Exception>(() => routed.GetResponseAsync([Ask(Question, bad)], Sixteen));
        Assert.Equal(direct.GetType(), viaRoute.GetType());
        Assert.Equal(direct.Message, viaRoute.Message);
        Assert.Empty(main.Calls);

        using var strict = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu", MaxImageBytes = 100 });
        using var small = new ScriptedMainClient().AsBuilder().UseCobraVision(strict).Build();
        var overDirect = await Assert.ThrowsAnyAsync<Exception>(() => strict.GetResponseAsync([Ask(Question, Scene())], Sixteen));
        var overRoute = await Assert.ThrowsAnyAsync<Exception>(() => small.GetResponseAsync([Ask(Question, Scene())], Sixteen));
        Assert.Equal(overDirect.GetType(), overRoute.GetType());
        Assert.Equal(overDirect.Message, overRoute.Message);
        Assert.Contains("MaxImageBytes", overRoute.Message, StringComparison.Ordinal);

        Assert.Equal((await cobra.GetResponseAsync([Ask(Question, Scene())], Sixteen)).Text, (await routed.GetResponseAsync([Ask(Question, Scene())], Sixteen)).Text);
    }

    [Fact]
    public async Task Cancellation_reaches_both_clients()
    {
        var started = new TaskCompletionSource();
        using var blocking = new ScriptedMainClient { BlockUntilCanceled = started };
        using var client = blocking.AsBuilder().UseCobraVision(eyes).Build();
        using var cts = new CancellationTokenSource();
        var pending = client.GetResponseAsync("wait", null, cts.Token);
        await started.Task;
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending);
        Assert.True(blocking.Calls.Single().Token.IsCancellationRequested);

        using var during = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in routed.GetStreamingResponseAsync([Ask(Question, Scene())], new ChatOptions { MaxOutputTokens = 200 }, during.Token))
            {
                if (++seen == 2)
                {
                    await during.CancelAsync();
                }
            }
        });
        Assert.True(eyes.Calls.Single().Token.IsCancellationRequested);
        Assert.True(seen < 200);
        Assert.Equal((await cobra.GetResponseAsync([Ask(Question, Scene())], Sixteen)).Text, (await routed.GetResponseAsync([Ask(Question, Scene())], Sixteen)).Text);
    }

    [Fact]
    public void Services_come_from_the_main_client_then_cobra_and_disposal_leaves_cobra_alone()
    {
        Assert.Equal(ScriptedMainClient.ModelId, routed.GetService<ChatClientMetadata>()!.DefaultModelId);
        Assert.Same(cobra, routed.GetService<CobraChatClient>());
        Assert.Same(main, routed.GetService<ScriptedMainClient>());

        var owned = new ScriptedMainClient();
        owned.AsBuilder().UseCobraVision(cobra).Build().Dispose();
        Assert.True(owned.Disposed);
        Assert.NotNull(cobra.GetService<CobraModelOptions>());           // still alive
    }

    [Fact]
    public void Bad_options_are_refused_by_name()
    {
        var builder = new ScriptedMainClient().AsBuilder();
        Assert.Contains("DescriptionCacheSize", Assert.Throws<ArgumentException>(() => builder.UseCobraVision(cobra, o => o.DescriptionCacheSize = -1)).Message, StringComparison.Ordinal);
        Assert.Contains("MaxDescribedImages", Assert.Throws<ArgumentException>(() => builder.UseCobraVision(cobra, o => o.MaxDescribedImages = 0)).Message, StringComparison.Ordinal);
        Assert.Contains("Mode", Assert.Throws<ArgumentException>(() => builder.UseCobraVision(cobra, o => o.Mode = (CobraVisionMode)7)).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentNullException>(() => builder.UseCobraVision((IChatClient)null!));
        Assert.Throws<ArgumentException>(() => cobra.AsBuilder().UseCobraVision(cobra).Build());
    }
}
