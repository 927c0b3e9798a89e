using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Routing;

/// <summary>
/// Wraps Cobra's client so that the usage it reports also names Cobra's part
/// (<see cref="CobraVision.VisionInputTokensKey"/>, <see cref="CobraVision.VisionOutputTokensKey"/>); summed with the
/// main client's usage, the totals hold both and the counts still tell what the eyes spent. Does not own Cobra.
/// </summary>
internal sealed class VisionUsageChatClient(IChatClient vision) : DelegatingChatClient(vision)
{
    public override async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var response = await base.GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
        if (response.Usage is { } usage)
        {
            Tag(usage);
        }

        return response;
    }

    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var update in base.GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
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

    private static void Tag(UsageDetails usage)
    {
        usage.AdditionalCounts ??= [];
        usage.AdditionalCounts[CobraVision.VisionInputTokensKey] = usage.InputTokenCount ?? 0;
        usage.AdditionalCounts[CobraVision.VisionOutputTokensKey] = usage.OutputTokenCount ?? 0;
    }
}
