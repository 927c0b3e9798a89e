using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Tests.Server;

/// <summary>
/// A chat client that records the options of every call and answers with a script. With provider <c>cobra</c> it
/// looks like Cobra's client to the server (n and logprobs go to it as options, its updates carry choice indexes).
/// </summary>
internal sealed class ScriptedChatClient(string provider, Func<ChatOptions, CancellationToken, IAsyncEnumerable<ChatResponseUpdate>> script) : IChatClient
{
    public ConcurrentQueue<ChatOptions> Calls { get; } = new();

    /// <summary>Cobra-like: per choice i of n, the text "choice i" in two updates (logprobs when asked), then usage for all.</summary>
    public static ScriptedChatClient CobraLike() => new("cobra", (options, cancellationToken) => Choices(options, cancellationToken));

    /// <summary>Another provider: one choice, its text names the seed.</summary>
    public static ScriptedChatClient Other() => new("other", (options, cancellationToken) => Seeded(options, cancellationToken));

    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        GetStreamingResponseAsync(messages, options, cancellationToken).ToChatResponseAsync(cancellationToken);

    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var recorded = options ?? new ChatOptions();
        Calls.Enqueue(recorded);
        return script(recorded, cancellationToken);
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata(provider) : serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose()
    {
    }

    public static ChatResponseUpdate Update(int choice, string text, ChatFinishReason? finish = null, IReadOnlyList<CobraTokenLogprob>? logprobs = null)
    {
        var update = new ChatResponseUpdate(ChatRole.Assistant, text) { FinishReason = finish, AdditionalProperties = [] };
        if (choice != 0)
        {
            update.AdditionalProperties[CobraAdditionalProperties.ChoiceIndex] = choice;
        }

        if (logprobs is not null)
        {
            update.AdditionalProperties[CobraAdditionalProperties.TokenLogprobs] = logprobs;
        }

        return update;
    }

    public static CobraTokenLogprob Logprob(string token, double logprob, int top) =>
        new(token, logprob, System.Text.Encoding.UTF8.GetBytes(token), [.. Enumerable.Range(0, top).Select(k => new CobraTopLogprob(token + k, logprob - k, System.Text.Encoding.UTF8.GetBytes(token + k)))]);

    private static async IAsyncEnumerable<ChatResponseUpdate> Choices(ChatOptions options, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await Task.Yield();
        int n = options.AdditionalProperties?.TryGetValue(CobraAdditionalProperties.ChoiceCount, out object? value) == true ? (int)value! : 1;
        bool logprobs = options.AdditionalProperties?.ContainsKey(CobraAdditionalProperties.Logprobs) == true;
        int top = logprobs ? (int)options.AdditionalProperties![CobraAdditionalProperties.TopLogprobs]! : 0;

        // Interleaved, as a batch decodes them: every choice's first token, then every choice's second.
        for (int i = 0; i < n; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return Update(i, "choice ", logprobs: logprobs ? [Logprob("choice ", -0.5, top)] : null);
        }

        for (int i = n - 1; i >= 0; i--)
        {
            yield return Update(i, i.ToString(System.Globalization.CultureInfo.InvariantCulture), i % 2 == 0 ? ChatFinishReason.Stop : ChatFinishReason.Length, logprobs ? [Logprob(i.ToString(System.Globalization.CultureInfo.InvariantCulture), -1.25, top)] : null);
        }

        yield return new ChatResponseUpdate { Contents = [new UsageContent(new UsageDetails { InputTokenCount = 5, OutputTokenCount = 2 * n, TotalTokenCount = 5 + (2 * n), CachedInputTokenCount = 3 })] };
    }

    private static async IAsyncEnumerable<ChatResponseUpdate> Seeded(ChatOptions options, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await Task.Yield();
        cancellationToken.ThrowIfCancellationRequested();
        yield return new ChatResponseUpdate(ChatRole.Assistant, $"seed {options.Seed}") { FinishReason = ChatFinishReason.Stop };
        yield return new ChatResponseUpdate { Contents = [new UsageContent(new UsageDetails { InputTokenCount = 4, OutputTokenCount = 2 })] };
    }
}
