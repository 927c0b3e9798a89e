using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace Cobra.AI.Routing;

#pragma warning disable MEAI001 // RoutingContext is the rule's input in both modes; see CobraVision.ExperimentalDiagnosticId.

/// <summary>
/// Describe mode: the main client (the inner client, owned) answers every request; before it is called, each image
/// of the conversation is answered by Cobra with the user's latest question (exactly as a direct call:
/// one user message with the question and the image, <see cref="CobraVisionOptions.DescriptionOptions"/>), and the
/// image part is replaced by a marked text part. The caller's options and tools go to the main client only.
/// Usage adds Cobra's part; a refused image fails as a direct call to Cobra would, before the main client is called.
/// </summary>
internal sealed partial class CobraDescribingChatClient : DelegatingChatClient
{
    private static readonly ChatOptions DefaultDescriptionOptions = new() { MaxOutputTokens = 256 };
    private readonly EyesChatClient eyes;
    private readonly IChatClient vision;
    private readonly Func<RoutingContext, bool> needsVision;
    private readonly DescriptionCache cache;
    private readonly ChatOptions descriptionOptions;
    private readonly int maxImages;
    private readonly ILogger logger;

    public CobraDescribingChatClient(IChatClient main, IChatClient vision, CobraVisionOptions settings, Func<RoutingContext, bool> needsVision, ILogger logger)
        : base(main)
    {
        this.vision = vision;
        eyes = new EyesChatClient(vision);
        this.needsVision = needsVision;
        cache = new DescriptionCache(settings.DescriptionCacheSize);
        descriptionOptions = settings.DescriptionOptions?.Clone() ?? DefaultDescriptionOptions;
        maxImages = settings.MaxDescribedImages;
        this.logger = logger;
    }

    public override async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (prepared, visionUsage) = await DescribeAsync(messages, options, cancellationToken).ConfigureAwait(false);
        var response = await base.GetResponseAsync(prepared, options, cancellationToken).ConfigureAwait(false);
        if (visionUsage is not null)
        {
            var total = new UsageDetails();
            if (response.Usage is { } mainUsage)
            {
                total.Add(mainUsage);
            }

            total.Add(visionUsage);
            response.Usage = total;
        }

        return response;
    }

    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (prepared, visionUsage) = await DescribeAsync(messages, options, cancellationToken).ConfigureAwait(false);
        string? responseId = null, messageId = null;
        await foreach (var update in base.GetStreamingResponseAsync(prepared, options, cancellationToken).ConfigureAwait(false))
        {
            responseId = update.ResponseId ?? responseId;
            messageId = update.MessageId ?? messageId;
            yield return update;
        }

        if (visionUsage is not null)
        {
            // Aggregation (ToChatResponse) adds every UsageContent, so the response's usage is main + Cobra.
            yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(visionUsage)]) { ResponseId = responseId, MessageId = messageId };
        }
    }

    /// <summary>This client, the main client's services, then Cobra's.</summary>
    public override object? GetService(Type serviceType, object? serviceKey = null) =>
        base.GetService(serviceType, serviceKey) ?? vision.GetService(serviceType, serviceKey);

    private async Task<(IEnumerable<ChatMessage> Messages, UsageDetails? VisionUsage)> DescribeAsync(IEnumerable<ChatMessage> messages, ChatOptions? options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages as IReadOnlyList<ChatMessage> ?? messages.ToList();
        if (!list.Any(VisionContent.HasImage) || !needsVision(new RoutingContext(list, options)))
        {
            return (list, null);
        }

        string question = VisionContent.Question(list);
        var images = new Dictionary<string, ImageItem>(StringComparer.Ordinal);
        var identities = new Dictionary<AIContent, string>(ReferenceEqualityComparer.Instance);
        foreach (var content in list.SelectMany(m => m.Contents).Where(VisionContent.IsImage))
        {
            var item = Identify(content, question);
            identities[content] = item.Identity;
            images.TryAdd(item.Identity, item);
        }

        if (images.Count > maxImages)
        {
            throw new CobraImageLimitException(
                $"The conversation carries {images.Count} distinct images; Describe mode describes at most {maxImages} per request (CobraVisionOptions.MaxDescribedImages).",
                nameof(CobraVisionOptions.MaxDescribedImages));
        }

        var descriptions = new Dictionary<string, string>(StringComparer.Ordinal);
        var misses = new List<ImageItem>();
        foreach (var item in images.Values)
        {
            if (item.CacheKey is not null && cache.TryGet(item.CacheKey, out var cached))
            {
                descriptions[item.Identity] = cached;
            }
            else
            {
                misses.Add(item);
            }
        }

        LogDescribing(logger, images.Count, images.Count - misses.Count);
        UsageDetails? usage = null;
        if (misses.Count > 0)
        {
            // Concurrent calls decode together in Cobra's batch; the first failure cancels the rest.
            using var failFast = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var answers = await Task.WhenAll(misses.Select(item => AskAsync(item, question, failFast))).ConfigureAwait(false);
            usage = new UsageDetails();
            for (int i = 0; i < misses.Count; i++)
            {
                descriptions[misses[i].Identity] = answers[i].Text;
                if (misses[i].CacheKey is { } key)
                {
                    cache.Add(key, answers[i].Text);
                }

                if (answers[i].Usage is { } spent)
                {
                    usage.Add(spent);
                }
            }
        }

        return (VisionContent.ReplaceImages(list, image => new TextContent(VisionContent.Mark(descriptions[identities[image]]))), usage);
    }

    private async Task<ChatResponse> AskAsync(ImageItem item, string question, CancellationTokenSource failFast)
    {
        try
        {
            return await eyes.GetResponseAsync([new ChatMessage(ChatRole.User, [new TextContent(question), item.Image])], descriptionOptions.Clone(), failFast.Token).ConfigureAwait(false);
        }
        catch
        {
            await failFast.CancelAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Image bytes (data or a <c>data:</c> URI) are identified and cached by their SHA-256 and the question; file and
    /// http(s) URIs are identified by the URI and never cached (what they name may change).
    /// </summary>
    private static ImageItem Identify(AIContent content, string question)
    {
        ReadOnlyMemory<byte>? bytes = content switch
        {
            DataContent data => data.Data,
            UriContent { Uri.Scheme: "data" } uri => new DataContent(uri.Uri).Data,
            _ => null,
        };

        if (bytes is { } b)
        {
            string hash = Convert.ToHexString(SHA256.HashData(b.Span));
            return new ImageItem("sha256:" + hash, DescriptionCache.Key(hash, question), content);
        }

        return new ImageItem("uri:" + ((UriContent)content).Uri.OriginalString, null, content);
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Describing {Images} image(s) with Cobra for the main client ({Cached} from the cache)")]
    private static partial void LogDescribing(ILogger logger, int images, int cached);

    private sealed record ImageItem(string Identity, string? CacheKey, AIContent Image);
}
