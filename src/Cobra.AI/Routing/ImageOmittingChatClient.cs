using Microsoft.Extensions.AI;

namespace Cobra.AI.Routing;

/// <summary>
/// Route mode's view of the main client for a model that cannot see: image parts become
/// <see cref="CobraVision.OmittedImageText"/>. Does not own the main client (the routing client does).
/// </summary>
internal sealed class ImageOmittingChatClient(IChatClient main) : DelegatingChatClient(main)
{
    public override Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        base.GetResponseAsync(Omit(messages), options, cancellationToken);

    public override IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        base.GetStreamingResponseAsync(Omit(messages), options, cancellationToken);

    protected override void Dispose(bool disposing)
    {
    }

    private static IEnumerable<ChatMessage> Omit(IEnumerable<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages as IReadOnlyList<ChatMessage> ?? messages.ToList();
        return list.Any(VisionContent.HasImage) ? VisionContent.ReplaceImages(list, _ => new TextContent(CobraVision.OmittedImageText)) : list;
    }
}
