using System.Net;
using System.Net.Sockets;

namespace Cobra.AI.Chat;

/// <summary>What a remote image fetch may do: size and time limits, an optional host allow-list, and the options class named in errors.</summary>
/// <param name="MaxBytes">Largest body read.</param>
/// <param name="Timeout">Time for the whole fetch, redirects included.</param>
/// <param name="AllowedHosts">Host names (or <c>*.domain</c> suffixes) that may be fetched; empty allows every public host.</param>
/// <param name="OptionsName">The options class, for error texts (<c>CobraModelOptions</c>).</param>
internal sealed record RemoteImagePolicy(long MaxBytes, TimeSpan Timeout, IReadOnlyList<string> AllowedHosts, string OptionsName);

/// <summary>
/// Fetches http(s) images without becoming a proxy into the host's network. Every connection goes through a
/// connect callback that resolves the name itself and connects only to a public unicast address, so a DNS
/// answer that changes between check and use (rebinding) and odd spellings of an address (2130706433,
/// 0x7f.1, [::ffff:127.0.0.1]) are judged by the address actually dialled. Redirects are followed by hand
/// (a bounded number, http(s) only, each hop checked against the allow-list and connected the same way). No
/// proxy, no cookies. Errors say "Remote image refused" or "Remote image failed" and never carry the remote
/// status, port or exception text, so the fetcher cannot be used to map a network.
/// </summary>
internal static class RemoteImageFetcher
{
    /// <summary>Redirects followed per fetch.</summary>
    public const int MaxRedirects = 3;

    private const int ChunkBytes = 81920;

    /// <summary>An HTTP client that connects only to public addresses.</summary>
    public static HttpClient CreateHttpClient() => CreateHttpClient(loopbackPortsForTests: null);

    /// <summary>
    /// As <see cref="CreateHttpClient()"/>; <paramref name="loopbackPortsForTests"/> additionally admits
    /// 127.0.0.1 on those ports, so tests can serve images from a loopback server (internal, never configurable).
    /// </summary>
    internal static HttpClient CreateHttpClient(IReadOnlySet<int>? loopbackPortsForTests)
    {
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseProxy = false,
            UseCookies = false,
            AutomaticDecompression = DecompressionMethods.None,
            MaxResponseHeadersLength = 64,
            ConnectCallback = (context, cancellationToken) => ConnectAsync(context.DnsEndPoint, loopbackPortsForTests, cancellationToken),
        };
        return new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
    }

    /// <summary>The image bytes at <paramref name="uri"/> under <paramref name="policy"/>.</summary>
    /// <exception cref="UnauthorizedAccessException">Refused: a non-public address, a host outside the allow-list, a bad redirect.</exception>
    /// <exception cref="CobraImageLimitException">The body is larger than <see cref="RemoteImagePolicy.MaxBytes"/>.</exception>
    /// <exception cref="TimeoutException">No complete answer within <see cref="RemoteImagePolicy.Timeout"/>.</exception>
    /// <exception cref="InvalidDataException">Failed: unreachable, an error status, or a broken answer.</exception>
    public static async Task<byte[]> FetchAsync(HttpClient http, Uri uri, RemoteImagePolicy policy, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(policy.Timeout);
        try
        {
            for (int redirects = 0; ; redirects++)
            {
                CheckTarget(uri, policy);
                using var request = new HttpRequestMessage(HttpMethod.Get, uri);
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
                if ((int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is { } next)
                {
                    if (redirects >= MaxRedirects)
                    {
                        throw Refused($"more than {MaxRedirects} redirects");
                    }

                    uri = next.IsAbsoluteUri ? next : new Uri(uri, next);
                    continue;
                }

                if (response.StatusCode != HttpStatusCode.OK)
                {
                    throw Failed("the server did not return the image");
                }

                if (response.Content.Headers.ContentLength > policy.MaxBytes)
                {
                    throw TooLarge(policy);
                }

                var stream = await response.Content.ReadAsStreamAsync(timeout.Token).ConfigureAwait(false);
                await using (stream.ConfigureAwait(false))
                {
                    return await ReadBoundedAsync(stream, policy, timeout.Token).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"Remote image failed: no complete answer within {policy.Timeout.TotalSeconds:0.#} s ({policy.OptionsName}.RemoteImageTimeout).");
        }
        catch (HttpRequestException e) when (FindRefusal(e) is { } refusal)
        {
            throw refusal;
        }
        catch (Exception e) when (e is HttpRequestException or IOException or SocketException)
        {
            throw Failed("the server could not be reached or broke off the answer");
        }
    }

    /// <summary>
    /// True for addresses the fetcher may connect to: public unicast. Refused: unspecified, loopback, private
    /// (RFC 1918, CGNAT 100.64/10, fc00::/7), link-local (169.254/16, fe80::/10), site-local, multicast,
    /// broadcast and reserved ranges, documentation and benchmark ranges, and IPv6 forms that embed or
    /// tunnel to an IPv4 address (mapped, compatible, NAT64, 6to4) when that address is refused; Teredo always.
    /// </summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            return IsPublicV4(address.GetAddressBytes());
        }

        if (address.AddressFamily != AddressFamily.InterNetworkV6)
        {
            return false;
        }

        byte[] b = address.GetAddressBytes();
        bool zeroPrefix96 = b.AsSpan(0, 12).IndexOfAnyExcept((byte)0) < 0;
        if (zeroPrefix96)
        {
            // :: and ::1, or an IPv4-compatible ::a.b.c.d.
            return b[12] != 0 && IsPublicV4(b.AsSpan(12, 4));
        }

        if (address.IsIPv4MappedToIPv6)
        {
            return IsPublicV4(b.AsSpan(12, 4));
        }

        return (b[0], b[1], b[2], b[3]) switch
        {
            (0xff, _, _, _) => false,                                         // multicast
            (var x, _, _, _) when (x & 0xfe) == 0xfc => false,                // unique local fc00::/7
            (0xfe, var y, _, _) when (y & 0x80) == 0x80 => false,             // link-local fe80::/10, site-local fec0::/10
            (0x00, 0x64, 0xff, 0x9b) when b.AsSpan(4, 8).IndexOfAnyExcept((byte)0) < 0 => IsPublicV4(b.AsSpan(12, 4)), // NAT64 64:ff9b::/96
            (0x00, 0x64, 0xff, 0x9b) => false,                                // local-use NAT64 64:ff9b:1::/48
            (0x20, 0x02, _, _) => IsPublicV4(b.AsSpan(2, 4)),                 // 6to4 2002::/16
            (0x20, 0x01, 0x00, 0x00) => false,                                // Teredo 2001::/32
            (0x20, 0x01, 0x0d, 0xb8) => false,                                // documentation 2001:db8::/32
            (0x01, 0x00, 0x00, 0x00) when b.AsSpan(4, 4).IndexOfAnyExcept((byte)0) < 0 => false, // discard 100::/64
            _ => true,
        };
    }

    private static bool IsPublicV4(ReadOnlySpan<byte> b) => (b[0], b[1], b[2]) switch
    {
        (0, _, _) => false,                                   // "this network", 0.0.0.0
        (10, _, _) => false,                                  // private
        (100, var y, _) when (y & 0xc0) == 64 => false,       // CGNAT 100.64/10
        (127, _, _) => false,                                 // loopback
        (169, 254, _) => false,                               // link-local (cloud metadata)
        (172, var y, _) when (y & 0xf0) == 16 => false,       // private 172.16/12
        (192, 0, 0) or (192, 0, 2) or (192, 88, 99) => false, // protocol assignments, documentation, 6to4 relay
        (192, 168, _) => false,                               // private
        (198, 18, _) or (198, 19, _) => false,                // benchmarking
        (198, 51, 100) or (203, 0, 113) => false,             // documentation
        (var x, _, _) when x >= 224 => false,                 // multicast, reserved, broadcast
        _ => true,
    };

    private static void CheckTarget(Uri uri, RemoteImagePolicy policy)
    {
        if (uri.Scheme is not ("http" or "https"))
        {
            throw Refused("only http(s) URLs are fetched");
        }

        if (policy.AllowedHosts.Count > 0 && !policy.AllowedHosts.Any(allowed => HostMatches(uri.IdnHost, allowed)))
        {
            throw Refused($"the host is not in {policy.OptionsName}.RemoteImageHosts");
        }
    }

    private static bool HostMatches(string host, string allowed) =>
        allowed.StartsWith("*.", StringComparison.Ordinal)
            ? host.EndsWith(allowed[1..], StringComparison.OrdinalIgnoreCase) && host.Length > allowed.Length - 1
            : string.Equals(host, allowed, StringComparison.OrdinalIgnoreCase);

    private static async ValueTask<Stream> ConnectAsync(DnsEndPoint endpoint, IReadOnlySet<int>? loopbackPortsForTests, CancellationToken cancellationToken)
    {
        string host = endpoint.Host.TrimStart('[').TrimEnd(']');
        IPAddress[] addresses;
        if (IPAddress.TryParse(host, out var literal))
        {
            addresses = [literal];
        }
        else
        {
            try
            {
                addresses = await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                throw Failed("the host name could not be resolved");
            }
        }

        bool TestLoopback(IPAddress a) => loopbackPortsForTests is not null && loopbackPortsForTests.Contains(endpoint.Port) && a.Equals(IPAddress.Loopback);
        var permitted = addresses.Where(a => IsPublic(a) || TestLoopback(a)).ToArray();
        if (permitted.Length == 0)
        {
            throw Refused("the host is not a public internet address");
        }

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(permitted, endpoint.Port, cancellationToken).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static async Task<byte[]> ReadBoundedAsync(Stream stream, RemoteImagePolicy policy, CancellationToken cancellationToken)
    {
        var buffer = new MemoryStream();
        var chunk = new byte[ChunkBytes];
        int read;
        while ((read = await stream.ReadAsync(chunk, cancellationToken).ConfigureAwait(false)) > 0)
        {
            if (buffer.Length + read > policy.MaxBytes)
            {
                throw TooLarge(policy);
            }

            buffer.Write(chunk, 0, read);
        }

        return buffer.ToArray();
    }

    private static UnauthorizedAccessException? FindRefusal(Exception e)
    {
        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is UnauthorizedAccessException refusal)
            {
                return refusal;
            }
        }

        return null;
    }

    private static UnauthorizedAccessException Refused(string reason) => new($"Remote image refused: {reason}.");

    private static InvalidDataException Failed(string reason) => new($"Remote image failed: {reason}.");

    private static CobraImageLimitException TooLarge(RemoteImagePolicy policy) =>
        new($"Remote image refused: the image is larger than {policy.MaxBytes} bytes ({policy.OptionsName}.MaxImageBytes).", "MaxImageBytes");
}
