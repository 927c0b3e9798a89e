using System.Security.Cryptography;
using Cobra.AI.Imaging;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Chat;

/// <summary>
/// Turns an image content item into a decoded <see cref="RgbImage"/> under the client's limits:
/// <see cref="DataContent"/> bytes; <see cref="UriContent"/> with a <c>data:</c> URI, a <c>file:</c> path inside
/// an allowed root (see <see cref="AllowedPaths"/>), or <c>http(s):</c> when remote images are enabled (see
/// <see cref="RemoteImageFetcher"/>). Data must be declared as <c>image/*</c>; the exact format is then
/// detected from the bytes. Decoding waits for room in the client's <see cref="ImageDecodeLimiter"/>.
/// </summary>
internal sealed class ImageResolver(CobraModelOptions options, HttpClient? http)
{
    private const string OptionsName = nameof(CobraModelOptions);

    private readonly ImageDecodeLimiter limiter = new(options.MaxConcurrentImageDecodes, options.MaxImageBytesInFlight);

    private ImageLimits Limits => new() { MaxBytes = options.MaxImageBytes, MaxPixels = options.MaxImagePixels };

    /// <summary>Decodes running now (tests).</summary>
    internal int ActiveDecodes => limiter.Active;

    /// <summary>True for content this resolver takes as an image (a <c>data:</c> URI's own media type is checked when it is read).</summary>
    public static bool IsImage(AIContent content) => content switch
    {
        DataContent data => IsImageMediaType(data.MediaType),
        UriContent uri => IsImageMediaType(uri.MediaType) || uri.Uri.Scheme == "data",
        _ => false,
    };

    /// <summary>
    /// The error for data or a URI that is not an image (<c>text/plain</c>, <c>application/pdf</c>, …): Cobra
    /// refuses it rather than answering as if the user had sent nothing.
    /// </summary>
    public static ArgumentException NotAnImage(AIContent content) => content switch
    {
        DataContent data => NotAnImage(data.MediaType),
        UriContent uri => NotAnImage(uri.MediaType),
        _ => new ArgumentException($"Content of type {content.GetType().Name} is not an image; Cobra reads text and images."),
    };

    /// <summary>An HTTP client for remote images (public addresses only), or null when they are disabled.</summary>
    public static HttpClient? CreateHttpClient(CobraModelOptions options) =>
        options.AllowRemoteImages ? RemoteImageFetcher.CreateHttpClient() : null;

    /// <summary>The decoded image and a key identifying its bytes (for conversation state reuse).</summary>
    public async Task<(RgbImage Image, string Key)> ResolveAsync(AIContent content, CancellationToken cancellationToken)
    {
        var (bytes, mediaType, source) = content switch
        {
            DataContent data when IsImageMediaType(data.MediaType) => (data.Data, data.MediaType, data.Name ?? "image data"),
            UriContent uri when IsImage(uri) => await ReadUriAsync(uri, cancellationToken).ConfigureAwait(false),
            _ => throw NotAnImage(content),
        };

        if (bytes.Length > options.MaxImageBytes)
        {
            throw new CobraImageLimitException($"{source}: {bytes.Length} bytes exceeds the limit of {options.MaxImageBytes} bytes ({OptionsName}.MaxImageBytes).", ImageLimits.MaxBytesName);
        }

        var array = bytes.ToArray();
        var inspected = ImageLoader.Inspect(array, Limits, mediaType, source);
        RgbImage image;
        using (await limiter.AcquireAsync(inspected.DecodeBytes, source, cancellationToken).ConfigureAwait(false))
        {
            image = ImageLoader.Decode(inspected);
        }

        return (image, Convert.ToHexString(SHA256.HashData(array)));
    }

    private async Task<(ReadOnlyMemory<byte> Bytes, string? MediaType, string Source)> ReadUriAsync(UriContent content, CancellationToken cancellationToken)
    {
        var uri = content.Uri;
        switch (uri.Scheme)
        {
            case "data":
                DataContent data;
                try
                {
                    data = new DataContent(uri);
                }
                catch (Exception e) when (e is FormatException or ArgumentException or UriFormatException)
                {
                    throw new ArgumentException($"The image data: URI is malformed ({e.Message}).", e);
                }

                return IsImageMediaType(data.MediaType) ? (data.Data, data.MediaType, "data: URI") : throw NotAnImage(data.MediaType);
            case "file":
                var bytes = await AllowedPaths.ReadFileAsync(uri.LocalPath, options.AllowedImageRoots, $"{OptionsName}.AllowedImageRoots", options.MaxImageBytes, ImageLimits.MaxBytesName, cancellationToken).ConfigureAwait(false);
                return (bytes, content.MediaType, uri.LocalPath);
            case "http" or "https":
                if (!options.AllowRemoteImages || http is null)
                {
                    throw new UnauthorizedAccessException($"Remote image refused: remote images are disabled ({OptionsName}.AllowRemoteImages).");
                }

                var policy = new RemoteImagePolicy(options.MaxImageBytes, options.RemoteImageTimeout, [.. options.RemoteImageHosts], OptionsName);
                return (await RemoteImageFetcher.FetchAsync(http, uri, policy, cancellationToken).ConfigureAwait(false), content.MediaType, "remote image");
            default:
                throw new ArgumentException($"Image URI scheme '{uri.Scheme}' is not supported (data:, file: under an allowed root, or http(s): when enabled).");
        }
    }

    private static ArgumentException NotAnImage(string? mediaType) =>
        new($"An image part holds {(mediaType is null ? "data without a media type" : $"'{mediaType}' data")}, not an image: Cobra takes image/* data (PNG, JPEG, GIF, BMP, WebP or TIFF) and refuses anything else rather than ignoring it.");

    /// <summary><c>image/*</c>, <c>image/png</c>, non-canonical names such as <c>image/jpg</c>: any image top-level type.</summary>
    private static bool IsImageMediaType(string? mediaType) =>
        mediaType is not null && mediaType.StartsWith("image/", StringComparison.OrdinalIgnoreCase);
}
