using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Chat;

/// <summary>How the client takes images: data, data: URIs, file: URIs under allowed roots, remote URIs only when enabled.</summary>
public sealed class ImageInputTests : IAsyncLifetime, IDisposable
{
    private const string Question = "What is going on in this image?";
    private const string Answer = "onddOnTheassisassis&&& re onwsAnswercle l";
    private readonly string root = Directory.CreateTempSubdirectory("cobra-images-").FullName;
    private readonly string outside = Directory.CreateTempSubdirectory("cobra-outside-").FullName;
    private CobraChatClient client = null!;

    public async Task InitializeAsync()
    {
        File.Copy(Golden.Fixtures("tiny-a", "images", "scene_100x70.png"), Path.Combine(root, "scene.png"));
        File.Copy(Golden.Fixtures("tiny-a", "images", "scene_100x70.png"), Path.Combine(outside, "scene.png"));
        client = await CobraChatClientTests.Load(o => o.AllowedImageRoots = [root]);
    }

    public Task DisposeAsync()
    {
        client.Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        Directory.Delete(root, recursive: true);
        Directory.Delete(outside, recursive: true);
    }

    private Task<ChatResponse> Ask(AIContent image) =>
        client.GetResponseAsync([new ChatMessage(ChatRole.User, [new TextContent(Question), image])], new ChatOptions { MaxOutputTokens = 16 });

    private static byte[] Png() => File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png"));

    [Theory]
    [InlineData("image/png")]
    [InlineData("image/jpg")]
    [InlineData("image/*")]
    public async Task Image_bytes_are_sniffed_whatever_the_declared_image_type(string mediaType)
    {
        Assert.Equal(Answer, (await Ask(new DataContent(Png(), mediaType))).Text);
    }

    [Fact]
    public async Task Data_uri_and_allowed_file_uri_work()
    {
        Assert.Equal(Answer, (await Ask(new UriContent("data:image/png;base64," + Convert.ToBase64String(Png()), "image/png"))).Text);
        Assert.Equal(Answer, (await Ask(new UriContent(new Uri(Path.Combine(root, "scene.png")), "image/png"))).Text);
    }

    [Fact]
    public async Task File_uris_outside_the_allowed_roots_are_refused_even_through_traversal_or_links()
    {
        var direct = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Ask(new UriContent(new Uri(Path.Combine(outside, "scene.png")), "image/png")));
        Assert.Contains("AllowedImageRoots", direct.Message, StringComparison.Ordinal);
        string traversal = Path.Combine(root, "..", Path.GetFileName(outside), "scene.png");
        await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Ask(new UriContent(new Uri(traversal), "image/png")));
        string link = Path.Combine(root, "link.png");
        File.CreateSymbolicLink(link, Path.Combine(outside, "scene.png"));
        await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Ask(new UriContent(new Uri(link), "image/png")));
    }

    [Fact]
    public async Task Remote_uris_are_refused_unless_enabled_and_other_schemes_always()
    {
        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Ask(new UriContent("http://127.0.0.1:9/x.png", "image/png")));
        Assert.Contains("AllowRemoteImages", e.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentException>(() => Ask(new UriContent("ftp://example.com/x.png", "image/png")));
    }

    [Theory]
    [InlineData("not an image")]
    [InlineData("<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>")]
    [InlineData("")]
    public async Task Bad_image_bytes_give_a_clear_error_and_the_client_stays_usable(string content)
    {
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Ask(new DataContent(System.Text.Encoding.UTF8.GetBytes(content), "image/png")));
        Assert.False(string.IsNullOrEmpty(e.Message));
        Assert.Equal(Answer, (await Ask(new DataContent(Png(), "image/png"))).Text);
    }

    [Fact]
    public async Task Images_over_the_byte_limit_are_refused_before_decoding()
    {
        using var small = await CobraChatClientTests.Load(o => o.MaxImageBytes = 100);
        var e = await Assert.ThrowsAsync<CobraImageLimitException>(() => small.GetResponseAsync([new ChatMessage(ChatRole.User, [new TextContent(Question), new DataContent(Png(), "image/png")])]));
        Assert.Equal("MaxImageBytes", e.LimitName);
        Assert.Contains("MaxImageBytes", e.Message, StringComparison.Ordinal);
    }
}
