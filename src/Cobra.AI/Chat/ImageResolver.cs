using System.Net;
using System.Security.Cryptography;
using Cobra.AI.Imaging;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Chat;

/// <summary>
/// Turns an image content item into a decoded <see cref="RgbImage"/> under the client's limits:
/// <see cref="DataContent"/> bytes; <see cref="UriContent"/> with a <c>data:</c> URI, a <c>file:</c> path inside
/// an allowed root (after resolving <c>..</c> and symbolic links), or <c>http(s):</c> when remote images are
/// enabled (time limit, size cap, redirects followed only to http(s)). The declared media type is a hint;
/// the format is detected from the bytes.
/// </summary>
internal sealed class ImageResolver(CobraModelOptions options, HttpClient? http)
{
    private const int MaxRedirects = 3;

    private ImageLimits Limits => new() { MaxBytes = options.MaxImageBytes, MaxPixels = options.MaxImagePixels };

    /// <summary>True for content this resolver takes as an image.</summary>
    public static bool IsImage(AIContent content) => content switch
    {
        DataContent data => IsImageMediaType(data.MediaType),
        UriContent uri => IsImageMediaType(uri.MediaType) || uri.Uri.Scheme == "data",
        _ => false,
    };

    /// <summary>The decoded image and a key identifying its bytes (for conversation state reuse).</summary>
    public async Task<(RgbImage Image, string Key)> ResolveAsync(AIContent content, CancellationToken cancellationToken)
    {
        var (bytes, mediaType, source) = content switch
        {
            DataContent data => (data.Data, data.MediaType, data.Name ?? "image data"),
            UriContent uri => await ReadUriAsync(uri, cancellationToken).ConfigureAwait(false),
            _ => throw new ArgumentException($"Content of type {content.GetType().Name} is not an image."),
        };

        if (bytes.Length > options.MaxImageBytes)
        {
            throw new InvalidDataException($"{source}: {bytes.Length} bytes exceeds the limit of {options.MaxImageBytes} bytes (CobraModelOptions.MaxImageBytes).");
        }

        var image = ImageLoader.Load(bytes.Span, Limits, mediaType, source);
        return (image, Convert.ToHexString(SHA256.HashData(bytes.Span)));
    }

    private async Task<(ReadOnlyMemory<byte> Bytes, string? MediaType, string Source)> ReadUriAsync(UriContent content, CancellationToken cancellationToken)
    {
        var uri = content.Uri;
        switch (uri.Scheme)
        {
            case "data":
                var data = new DataContent(uri);
                return (data.Data, data.MediaType, "data: URI");
            case "file":
                string path = AllowedFile(uri);
                var bytes = await ReadBoundedAsync(File.OpenRead(path), path, cancellationToken).ConfigureAwait(false);
                return (bytes, content.MediaType, path);
            case "http" or "https":
                return (await DownloadAsync(uri, cancellationToken).ConfigureAwait(false), content.MediaType, uri.ToString());
            default:
                throw new ArgumentException($"Image URI scheme '{uri.Scheme}' is not supported (data:, file: under an allowed root, or http(s): when enabled).");
        }
    }

    /// <summary>The local path of a <c>file:</c> URI when it lies inside an allowed root; otherwise an exception.</summary>
    private string AllowedFile(Uri uri) => AllowedPaths.Resolve(uri.LocalPath, options.AllowedImageRoots, "CobraModelOptions.AllowedImageRoots");

    private async Task<ReadOnlyMemory<byte>> DownloadAsync(Uri uri, CancellationToken cancellationToken)
    {
        if (!options.AllowRemoteImages || http is null)
        {
            throw new UnauthorizedAccessException($"Image URI '{uri}' refused: remote images are disabled (CobraModelOptions.AllowRemoteImages).");
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.RemoteImageTimeout);
        try
        {
            for (int redirects = 0; ; redirects++)
            {
                using var response = await http.GetAsync(uri, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
                if ((int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is { } next)
                {
                    next = next.IsAbsoluteUri ? next : new Uri(uri, next);
                    if (redirects >= MaxRedirects || next.Scheme is not ("http" or "https"))
                    {
                        throw new InvalidDataException($"Image URI '{uri}': redirect to '{next}' refused (only up to {MaxRedirects} redirects to http(s) are followed).");
                    }

                    uri = next;
                    continue;
                }

                if (response.StatusCode != HttpStatusCode.OK)
                {
                    throw new InvalidDataException($"Image URI '{uri}': the server answered {(int)response.StatusCode} {response.ReasonPhrase}.");
                }

                if (response.Content.Headers.ContentLength > options.MaxImageBytes)
                {
                    throw new InvalidDataException($"Image URI '{uri}': {response.Content.Headers.ContentLength} bytes exceeds the limit of {options.MaxImageBytes} bytes (CobraModelOptions.MaxImageBytes).");
                }

                var stream = await response.Content.ReadAsStreamAsync(timeout.Token).ConfigureAwait(false);
                return await ReadBoundedAsync(stream, uri.ToString(), timeout.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"Image URI '{uri}': no complete answer within {options.RemoteImageTimeout.TotalSeconds:0.#} s (CobraModelOptions.RemoteImageTimeout).");
        }
        catch (HttpRequestException e)
        {
            throw new InvalidDataException($"Image URI '{uri}': {e.Message}", e);
        }
    }

    /// <summary>Reads at most MaxImageBytes + 1 bytes, so an oversized source is refused without reading it all.</summary>
    private async Task<ReadOnlyMemory<byte>> ReadBoundedAsync(Stream stream, string source, CancellationToken cancellationToken)
    {
        await using (stream.ConfigureAwait(false))
        {
            var buffer = new MemoryStream();
            var chunk = new byte[81920];
            int read;
            while ((read = await stream.ReadAsync(chunk, cancellationToken).ConfigureAwait(false)) > 0)
            {
                buffer.Write(chunk, 0, read);
                if (buffer.Length > options.MaxImageBytes)
                {
                    throw new InvalidDataException($"{source}: more than {options.MaxImageBytes} bytes (CobraModelOptions.MaxImageBytes).");
                }
            }

            return buffer.GetBuffer().AsMemory(0, (int)buffer.Length);
        }
    }

    /// <summary><c>image/*</c>, <c>image/png</c>, non-canonical names such as <c>image/jpg</c>: any image top-level type.</summary>
    private static bool IsImageMediaType(string? mediaType) =>
        mediaType is not null && mediaType.StartsWith("image/", StringComparison.OrdinalIgnoreCase);
}
