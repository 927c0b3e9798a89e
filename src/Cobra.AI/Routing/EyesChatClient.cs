using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Routing;

/// <summary>
/// Cobra as the routed clients call it. The usage it reports also names Cobra's part
/// (<see cref="CobraVision.VisionInputTokensKey"/>, <see cref="CobraVision.VisionOutputTokensKey"/>), so that summed
/// with the main client's usage the totals hold both and the counts still tell what the eyes spent. A
/// <see cref="ChatOptions.ConversationId"/> names the main client's service-held conversation, which Cobra does not
/// hold: it is not sent to Cobra (Cobra answers the messages the caller sent), and none of Cobra's comes back, so
/// the caller keeps talking to the main client's conversation. Does not own Cobra.
/// </summary>
internal sealed class EyesChatClient(IChatClient vision) : DelegatingChatClient(vision)
{
    public override async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var response = await base.GetResponseAsync(messages, WithoutConversation(options), cancellationToken).ConfigureAwait(false);
        response.ConversationId = null;
        if (response.Usage is { } usage)
        {
            Tag(usage);
        }

        return response;
    }

    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var update in base.GetStreamingResponseAsync(messages, WithoutConversation(options), cancellationToken).ConfigureAwait(false))
        {
            update.ConversationId = null;
            foreach (var usage in update.Contents.OfType<UsageContent>())
            {
                Tag(usage.Details);
            }

            yield return update;
        }
    }

    /// <summary>Cobra is shared, not owned: the app or the container disposes it.</summary>
    protected override void Dispose(bool disposing)
    {
    }

    private static ChatOptions? WithoutConversation(ChatOptions? options)
    {
        if (options?.ConversationId is null)
        {
            return options;
        }

        var copy = options.Clone();
        copy.ConversationId = null;
        return copy;
    }

    private static void Tag(UsageDetails usage)
    {
        usage.AdditionalCounts ??= [];
        usage.AdditionalCounts[CobraVision.VisionInputTokensKey] = usage.InputTokenCount ?? 0;
        usage.AdditionalCounts[CobraVision.VisionOutputTokensKey] = usage.OutputTokenCount ?? 0;
    }
}
