using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Tests.Routing;

/// <summary>One call a client received: the messages (copied), the options and the token.</summary>
internal sealed record SeenCall(IReadOnlyList<ChatMessage> Messages, ChatOptions? Options, CancellationToken Token, bool Streaming);

/// <summary>
/// The app's main model in these tests: records every call, answers "main saw: QUESTION" (the last user text), or
/// asks for the first tool once when <see cref="CallTools"/> is set and then reports the tool's result.
/// </summary>
internal sealed class ScriptedMainClient : IChatClient
{
    public const string ModelId = "scripted-main";
    public static readonly UsageDetails Spent = new() { InputTokenCount = 10, OutputTokenCount = 5, TotalTokenCount = 15 };

    public ConcurrentQueue<SeenCall> Calls { get; } = new();

    public bool CallTools { get; init; }

    /// <summary>Completes when a call starts; the call then waits for its token to be canceled.</summary>
    public TaskCompletionSource? BlockUntilCanceled { get; init; }

    public bool Disposed { get; private set; }

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var list = messages.ToList();
        Calls.Enqueue(new SeenCall(list, options, cancellationToken, Streaming: false));
        return await AnswerAsync(list, options, cancellationToken);
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var list = messages.ToList();
        Calls.Enqueue(new SeenCall(list, options, cancellationToken, Streaming: true));
        var response = await AnswerAsync(list, options, cancellationToken);
        foreach (var update in response.ToChatResponseUpdates())
        {
            yield return update;
        }
    }

    private async Task<ChatResponse> AnswerAsync(List<ChatMessage> messages, ChatOptions? options, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (BlockUntilCanceled is { } started)
        {
            started.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }

        var result = messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().LastOrDefault();
        var tool = options?.Tools?.OfType<AIFunction>().FirstOrDefault();
        ChatMessage reply = CallTools && result is null && tool is not null
            ? new ChatMessage(ChatRole.Assistant, [new FunctionCallContent("call-1", tool.Name, new Dictionary<string, object?> { ["city"] = "Lisbon" })])
            : new ChatMessage(ChatRole.Assistant, result is null ? "main saw: " + LastUserText(messages) : $"the tool said {result.Result}");
        return new ChatResponse(reply)
        {
            ModelId = ModelId,
            ResponseId = "main-" + Calls.Count,
            FinishReason = ChatFinishReason.Stop,
            Usage = new UsageDetails { InputTokenCount = Spent.InputTokenCount, OutputTokenCount = Spent.OutputTokenCount, TotalTokenCount = Spent.TotalTokenCount },
        };
    }

    public static string LastUserText(IEnumerable<ChatMessage> messages) => messages.Last(m => m.Role == ChatRole.User).Text;

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is null && serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata("scripted", null, ModelId)
        : serviceKey is null && serviceType.IsInstanceOfType(this) ? this
        : null;

    public void Dispose() => Disposed = true;
}

/// <summary>Counts and records what reaches Cobra; never disposes it.</summary>
internal sealed class RecordingClient(IChatClient inner) : DelegatingChatClient(inner)
{
    public ConcurrentQueue<SeenCall> Calls { get; } = new();

    public override Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        Calls.Enqueue(new SeenCall(messages.ToList(), options, cancellationToken, Streaming: false));
        return base.GetResponseAsync(messages, options, cancellationToken);
    }

    public override IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        Calls.Enqueue(new SeenCall(messages.ToList(), options, cancellationToken, Streaming: true));
        return base.GetStreamingResponseAsync(messages, options, cancellationToken);
    }

    protected override void Dispose(bool disposing)
    {
    }
}

internal static class RoutingImages
{
    public const string Question = "What is going on in this image?";

    public static DataContent Scene() => new(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png")), "image/png");

    public static DataContent Badge() => new(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "badge_64x64_rgba.png")), "image/png");

    public static ChatMessage Ask(string question, AIContent image) => new(ChatRole.User, [new TextContent(question), image]);

    public static bool HasImage(IEnumerable<ChatMessage> messages) =>
        messages.SelectMany(m => m.Contents).Any(c => c is DataContent or UriContent);
}
