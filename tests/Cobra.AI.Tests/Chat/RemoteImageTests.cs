using System.Net;
using System.Net.Sockets;
using Cobra.AI.Chat;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Chat;

/// <summary>
/// Remote images never reach the host's own network: every spelling of a non-public address, redirects to
/// one, other schemes and hosts outside the allow-list are refused before a byte is sent, and error texts
/// carry no remote status or port. A loopback server stands in for the internet through an internal seam
/// that admits its one port; a normal fetch works right after each refusal.
/// </summary>
public sealed class RemoteImageTests : IDisposable
{
    private static readonly byte[] Png = File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png"));
    private readonly LoopbackImageServer server = new();
    private readonly List<HttpClient> clients = [];

    public RemoteImageTests()
    {
        server.Routes["/img.png"] = (200, "Content-Type: image/png\r\n", Png);
    }

    public void Dispose()
    {
        foreach (var client in clients)
        {
            client.Dispose();
        }

        server.Dispose();
    }

    private ImageResolver Resolver(bool admitServer, Action<CobraModelOptions>? configure = null, params int[] alsoAdmit)
    {
        var options = new CobraModelOptions { AllowRemoteImages = true };
        configure?.Invoke(options);
        var http = RemoteImageFetcher.CreateHttpClient(admitServer ? new HashSet<int>([server.Port, .. alsoAdmit]) : null);
        clients.Add(http);
        return new ImageResolver(options, http);
    }

    private static Task<(Cobra.AI.Imaging.RgbImage Image, string Key)> Resolve(ImageResolver resolver, string url) =>
        resolver.ResolveAsync(new UriContent(url, "image/png"), CancellationToken.None);

    private async Task AssertNormalFetchWorks()
    {
        var (image, _) = await Resolve(Resolver(admitServer: true), server.Url("/img.png"));
        Assert.Equal((100, 70), (image.Width, image.Height));
    }

    public static TheoryData<string> NonPublicUrls =>
    [
        "http://127.0.0.1:{port}/img.png",
        "http://localhost:{port}/img.png",
        "http://[::ffff:127.0.0.1]:{port}/img.png",
        "http://[::1]:{port}/img.png",
        "http://2130706433:{port}/img.png",
        "http://0x7f.1:{port}/img.png",
        "http://0177.0.0.1:{port}/img.png",
        "http://127.1:{port}/img.png",
        "http://0.0.0.0:{port}/img.png",
        "http://[::]:{port}/img.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/img.png",
        "http://10.1.2.3/img.png",
        "http://172.16.0.1/img.png",
        "http://192.168.0.1/img.png",
        "http://100.64.0.1/img.png",
        "http://[fd00::1]/img.png",
        "http://[::ffff:10.0.0.1]/img.png",
        "http://224.0.0.1/img.png",
        "http://255.255.255.255/img.png",
    ];

    [Theory]
    [MemberData(nameof(NonPublicUrls))]
    public async Task Non_public_addresses_are_refused_in_every_spelling(string template)
    {
        string url = template.Replace("{port}", server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(admitServer: false), url));

        Assert.StartsWith("Remote image refused", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), e.Message, StringComparison.Ordinal);
        Assert.Empty(server.Requests);
        await AssertNormalFetchWorks();
    }

    [Theory]
    [InlineData("http://127.0.0.1:{other}/img.png")]
    [InlineData("http://169.254.169.254/latest/meta-data/")]
    [InlineData("http://[::ffff:192.168.1.1]/")]
    [InlineData("file:///etc/passwd")]
    [InlineData("ftp://example.com/img.png")]
    public async Task Redirects_to_refused_targets_are_refused(string target)
    {
        int other = ClosedPort();
        server.Routes["/hop"] = (302, $"Location: {target.Replace("{other}", other.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal)}\r\n", []);

        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(admitServer: true), server.Url("/hop")));

        Assert.StartsWith("Remote image refused", e.Message, StringComparison.Ordinal);
        Assert.Equal(new[] { "/hop" }, server.Requests.ToArray());
        await AssertNormalFetchWorks();
    }

    [Fact]
    public async Task A_redirect_loop_stops_at_the_bound_and_a_plain_redirect_is_followed()
    {
        server.Routes["/loop"] = (302, "Location: /loop\r\n", []);
        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(admitServer: true), server.Url("/loop")));
        Assert.Contains($"more than {RemoteImageFetcher.MaxRedirects} redirects", e.Message, StringComparison.Ordinal);
        Assert.Equal(RemoteImageFetcher.MaxRedirects + 1, server.Requests.Count);

        server.Routes["/moved"] = (301, "Location: /img.png\r\n", []);
        var (image, _) = await Resolve(Resolver(admitServer: true), server.Url("/moved"));
        Assert.Equal(100, image.Width);
    }

    [Fact]
    public async Task Failures_say_failed_without_the_remote_status_port_or_body()
    {
        server.Routes["/broken"] = (503, "", "internal detail: db at 10.0.0.7"u8.ToArray());
        var status = await Assert.ThrowsAsync<InvalidDataException>(() => Resolve(Resolver(admitServer: true), server.Url("/broken")));
        Assert.StartsWith("Remote image failed", status.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("503", status.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("10.0.0.7", status.Message, StringComparison.Ordinal);

        int closed = ClosedPort();
        var refusedPort = await Assert.ThrowsAsync<InvalidDataException>(() => Resolve(Resolver(admitServer: true, alsoAdmit: closed), $"http://127.0.0.1:{closed}/img.png"));
        Assert.StartsWith("Remote image failed", refusedPort.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(closed.ToString(System.Globalization.CultureInfo.InvariantCulture), refusedPort.Message, StringComparison.Ordinal);
        await AssertNormalFetchWorks();
    }

    [Fact]
    public async Task A_body_over_MaxImageBytes_is_a_typed_limit_error()
    {
        server.Routes["/big"] = (200, "", new byte[5000]);
        var e = await Assert.ThrowsAsync<CobraImageLimitException>(() => Resolve(Resolver(admitServer: true, o => o.MaxImageBytes = 1000), server.Url("/big")));
        Assert.Equal("MaxImageBytes", e.LimitName);
        await AssertNormalFetchWorks();
    }

    [Fact]
    public async Task The_host_allow_list_is_checked_before_connecting()
    {
        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(admitServer: true, o => o.RemoteImageHosts = ["images.example.com", "*.example.org"]), server.Url("/img.png")));
        Assert.Contains("RemoteImageHosts", e.Message, StringComparison.Ordinal);
        Assert.Empty(server.Requests);

        var (image, _) = await Resolve(Resolver(admitServer: true, o => o.RemoteImageHosts = ["127.0.0.1"]), server.Url("/img.png"));
        Assert.Equal(100, image.Width);
    }

    [Fact]
    public async Task Disabled_remote_images_are_refused()
    {
        var resolver = new ImageResolver(new CobraModelOptions(), http: null);
        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(resolver, server.Url("/img.png")));
        Assert.Contains("AllowRemoteImages", e.Message, StringComparison.Ordinal);
        Assert.Null(ImageResolver.CreateHttpClient(new CobraModelOptions()));
    }

    [Fact]
    public async Task The_chat_client_refuses_loopback_and_answers_the_next_request()
    {
        using var client = await CobraChatClientTests.Load(o => o.AllowRemoteImages = true);
        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, [new TextContent("What is this?"), new UriContent(server.Url("/img.png"), "image/png")])]));
        Assert.StartsWith("Remote image refused", e.Message, StringComparison.Ordinal);
        Assert.Empty(server.Requests);

        var answer = await client.GetResponseAsync([new ChatMessage(ChatRole.User, [new TextContent("What is this?"), new DataContent(Png, "image/png")])], new ChatOptions { MaxOutputTokens = 4 });
        Assert.NotEmpty(answer.Text);
    }

    [Theory]
    [InlineData("8.8.8.8", true)]
    [InlineData("93.184.216.34", true)]
    [InlineData("2606:4700:4700::1111", true)]
    [InlineData("2002:5db8:d822::1", true)]
    [InlineData("64:ff9b::808:808", true)]
    [InlineData("0.0.0.0", false)]
    [InlineData("0.1.2.3", false)]
    [InlineData("127.255.255.254", false)]
    [InlineData("10.0.0.1", false)]
    [InlineData("100.64.0.1", false)]
    [InlineData("100.127.255.255", false)]
    [InlineData("169.254.169.254", false)]
    [InlineData("172.16.0.1", false)]
    [InlineData("172.31.255.255", false)]
    [InlineData("192.0.0.8", false)]
    [InlineData("192.168.1.1", false)]
    [InlineData("198.18.0.1", false)]
    [InlineData("224.0.0.251", false)]
    [InlineData("240.0.0.1", false)]
    [InlineData("255.255.255.255", false)]
    [InlineData("::", false)]
    [InlineData("::1", false)]
    [InlineData("::ffff:127.0.0.1", false)]
    [InlineData("::ffff:169.254.169.254", false)]
    [InlineData("::127.0.0.1", false)]
    [InlineData("64:ff9b::7f00:1", false)]
    [InlineData("2002:7f00:1::1", false)]
    [InlineData("2002:c0a8:101::1", false)]
    [InlineData("2001::1", false)]
    [InlineData("2001:db8::1", false)]
    [InlineData("fc00::1", false)]
    [InlineData("fd12:3456::1", false)]
    [InlineData("fe80::1", false)]
    [InlineData("febf::1", false)]
    [InlineData("fec0::1", false)]
    [InlineData("ff02::1", false)]
    public void Address_classification(string address, bool isPublic)
    {
        Assert.Equal(isPublic, RemoteImageFetcher.IsPublic(IPAddress.Parse(address)));
        Assert.True(isPublic || !RemoteImageFetcher.IsPublic(IPAddress.Parse(address).MapToIPv6()));
    }

    private static int ClosedPort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }
}
