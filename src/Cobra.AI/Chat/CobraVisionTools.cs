using System.ComponentModel;
using Cobra.AI.Chat;
using Microsoft.Extensions.AI;

namespace Cobra.AI;

/// <summary>
/// Where a vision tool may take images from: data URIs always; file paths only under
/// <see cref="AllowedRoots"/>; http(s) URLs only when <see cref="AllowRemoteImages"/>; ids the host put in
/// <see cref="ImageStore"/>. Never modified by the tool.
/// </summary>
public sealed class CobraImageReferenceOptions
{
    /// <summary>
    /// Folders whose files the tool may read. Paths are compared after resolving every component (links to
    /// folders included), and only regular files are read (not FIFOs, devices or folders).
    /// </summary>
    public IList<string> AllowedRoots { get; set; } = [];

    /// <summary>
    /// Fetch http(s) URLs, under the same rules as <see cref="CobraModelOptions.AllowRemoteImages"/>: public
    /// internet addresses only, checked on the address connected and on every redirect.
    /// </summary>
    public bool AllowRemoteImages { get; set; }

    /// <summary>With <see cref="AllowRemoteImages"/>, the hosts that may be fetched (<c>*.example.com</c> for subdomains); empty allows any public host.</summary>
    public IList<string> RemoteImageHosts { get; set; } = [];

    /// <summary>Time limit for fetching a remote image.</summary>
    public TimeSpan RemoteImageTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Largest image read from a file or URL, in bytes.</summary>
    public long MaxImageBytes { get; set; } = 20L * 1024 * 1024;

    /// <summary>Images the host registered by id (e.g. uploads), looked up before anything else.</summary>
    public IDictionary<string, DataContent> ImageStore { get; set; } = new Dictionary<string, DataContent>(StringComparer.Ordinal);

    /// <summary>Generation settings for the tool's question (greedy, 256 tokens by default).</summary>
    public ChatOptions? ChatOptions { get; set; }
}

/// <summary>
/// Cobra as a tool for agents running on any other model: the calling model passes an image reference and a
/// question; the tool asks the vision client exactly as a direct chat call would (the question as the user
/// turn with the image) and returns the answer as text marked as untrusted image content. A reference that
/// is missing, not allowed, too large or not an image comes back as a readable tool error, never an exception.
/// </summary>
public static class CobraVisionTools
{
    /// <summary>Name of the describe-image function.</summary>
    public const string DescribeImageName = "describe_image";

    /// <summary>Prefix of every answer: the text came from looking at an image the user supplied.</summary>
    public const string UntrustedPrefix = "[untrusted image content] ";

    /// <summary>Prefix of every tool error.</summary>
    public const string ErrorPrefix = "Error: ";

    private const string DefaultQuestion = "Describe this image.";

    /// <summary>An <see cref="AIFunction"/> <c>describe_image(image, question)</c> over <paramref name="vision"/>.</summary>
    /// <param name="vision">The client that sees images (a <see cref="CobraChatClient"/>).</param>
    /// <param name="options">Where images may come from.</param>
    /// <returns>The tool, for <c>ChatOptions.Tools</c>, <c>UseFunctionInvocation()</c> or agents.</returns>
    public static AIFunction CreateDescribeImageFunction(IChatClient vision, CobraImageReferenceOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(vision);
        var settings = options ?? new CobraImageReferenceOptions();
        return AIFunctionFactory.Create(
            ([Description("The image: a data: URI, a file path, an http(s) URL, or an image id from the conversation.")] string image,
             [Description("What to ask about the image; empty to get a description.")] string? question,
             CancellationToken cancellationToken) => DescribeImageAsync(vision, settings, image, question, cancellationToken),
            new AIFunctionFactoryOptions
            {
                Name = DescribeImageName,
                Description = "Looks at an image and answers a question about it (describe it, answer a question, or read the text in it). Returns text.",
            });
    }

    /// <summary>Asks <paramref name="vision"/> about the referenced image; errors come back as text starting with <see cref="ErrorPrefix"/>.</summary>
    /// <param name="vision">The client that sees images.</param>
    /// <param name="options">Where images may come from.</param>
    /// <param name="image">The image reference.</param>
    /// <param name="question">The question; empty for a description.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The answer prefixed with <see cref="UntrustedPrefix"/>, or an error text.</returns>
    public static Task<string> DescribeImageAsync(IChatClient vision, CobraImageReferenceOptions options, string image, string? question, CancellationToken cancellationToken = default) =>
        DescribeImageAsync(vision, options, image, question, RemoteImageFetcher.CreateHttpClient, cancellationToken);

    /// <summary>As the public overload, fetching remote images with clients from <paramref name="remoteClient"/> (a test seam).</summary>
    internal static async Task<string> DescribeImageAsync(IChatClient vision, CobraImageReferenceOptions options, string image, string? question, Func<HttpClient> remoteClient, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(vision);
        ArgumentNullException.ThrowIfNull(options);
        AIContent content;
        try
        {
            content = await ResolveAsync(image, options, remoteClient, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (IsToolError(e, cancellationToken))
        {
            return ErrorPrefix + Describe(e);
        }

        ChatMessage turn = new(ChatRole.User, [new TextContent(string.IsNullOrWhiteSpace(question) ? DefaultQuestion : question), content]);
        try
        {
            var response = await vision.GetResponseAsync([turn], options.ChatOptions ?? new ChatOptions { MaxOutputTokens = 256 }, cancellationToken).ConfigureAwait(false);
            return UntrustedPrefix + response.Text;
        }
        catch (Exception e) when (IsToolError(e, cancellationToken))
        {
            return ErrorPrefix + Describe(e);
        }
    }

    /// <summary>Every failure is the calling model's to read, except the caller's own cancellation.</summary>
    private static bool IsToolError(Exception e, CancellationToken cancellationToken) =>
        !(e is OperationCanceledException && cancellationToken.IsCancellationRequested);

    /// <summary>Messages of the expected failures; anything else is named by type only, so internals stay inside.</summary>
    private static string Describe(Exception e) =>
        e is ArgumentException or IOException or UnauthorizedAccessException or InvalidDataException or NotSupportedException or TimeoutException or InvalidOperationException
            ? e.Message
            : $"the image could not be processed ({e.GetType().Name}).";

    private static async Task<AIContent> ResolveAsync(string reference, CobraImageReferenceOptions options, Func<HttpClient> remoteClient, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(reference))
        {
            throw new ArgumentException("No image reference was given.");
        }

        reference = reference.Trim();
        if (options.ImageStore.TryGetValue(reference, out var stored))
        {
            return stored;
        }

        if (reference.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            try
            {
                return new DataContent(reference);
            }
            catch (FormatException e)
            {
                throw new ArgumentException($"The data URI is malformed ({e.Message}).", e);
            }
        }

        if (Uri.TryCreate(reference, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https")
        {
            if (!options.AllowRemoteImages)
            {
                throw new UnauthorizedAccessException("Remote image refused: remote images are not enabled for this tool (CobraImageReferenceOptions.AllowRemoteImages).");
            }

            using var http = remoteClient();
            var policy = new RemoteImagePolicy(options.MaxImageBytes, options.RemoteImageTimeout, [.. options.RemoteImageHosts], nameof(CobraImageReferenceOptions));
            return new DataContent(await RemoteImageFetcher.FetchAsync(http, uri, policy, cancellationToken).ConfigureAwait(false), "image/*");
        }

        // A plain path also parses as a file URI, which would collapse "link/.." lexically: keep it as given.
        string path = uri is { IsFile: true } && reference.StartsWith("file:", StringComparison.OrdinalIgnoreCase) ? uri.LocalPath : reference;
        var bytes = await AllowedPaths.ReadFileAsync(path, options.AllowedRoots, "CobraImageReferenceOptions.AllowedRoots", options.MaxImageBytes, "MaxImageBytes", cancellationToken).ConfigureAwait(false);
        return new DataContent(bytes, "image/*");
    }
}
