using Cobra.AI.Chat;
using Cobra.AI.Imaging;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Chat;

/// <summary>
/// Image limits are typed (<see cref="CobraImageLimitException"/> naming the option), decodes are bounded in
/// number and memory, and data that is not an image is refused instead of silently dropped.
/// </summary>
public sealed class ImageLimitTests
{
    private static readonly byte[] Png = File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png"));

    private static Task<(RgbImage Image, string Key)> Resolve(CobraModelOptions options, AIContent content) =>
        new ImageResolver(options, http: null).ResolveAsync(content, CancellationToken.None);

    [Fact]
    public void The_default_pixel_limit_is_25_megapixels()
    {
        Assert.Equal(25_000_000, new CobraModelOptions().MaxImagePixels);
        Assert.Equal(25_000_000, new ImageLimits().MaxPixels);
    }

    [Theory]
    [InlineData("MaxImageBytes")]
    [InlineData("MaxImagePixels")]
    [InlineData("MaxImageBytesInFlight")]
    public async Task Each_limit_throws_a_typed_error_naming_its_option_and_the_next_image_decodes(string limit)
    {
        var options = new CobraModelOptions();
        switch (limit)
        {
            case "MaxImageBytes": options.MaxImageBytes = 100; break;
            case "MaxImagePixels": options.MaxImagePixels = 100 * 70 - 1; break;
            default: options.MaxImageBytesInFlight = 100 * 70 * 7; break; // the estimate also counts the encoded bytes
        }

        var e = await Assert.ThrowsAsync<CobraImageLimitException>(() => Resolve(options, new DataContent(Png, "image/png")));
        Assert.Equal(limit, e.LimitName);
        Assert.Contains(limit, e.Message, StringComparison.Ordinal);

        var (image, _) = await Resolve(new CobraModelOptions(), new DataContent(Png, "image/png"));
        Assert.Equal((100, 70), (image.Width, image.Height));
    }

    [Fact]
    public async Task The_limiter_admits_in_order_within_the_slot_and_byte_budget()
    {
        var limiter = new ImageDecodeLimiter(maxConcurrent: 2, maxBytes: 100);
        var first = await limiter.AcquireAsync(60, "a", CancellationToken.None);
        var second = await limiter.AcquireAsync(40, "b", CancellationToken.None);
        var third = limiter.AcquireAsync(10, "c", CancellationToken.None).AsTask();    // no slot left
        Assert.False(third.IsCompleted);
        Assert.Equal(2, limiter.Active);

        first.Dispose();
        (await third.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
        var fourth = limiter.AcquireAsync(70, "d", CancellationToken.None).AsTask();   // 40 + 70 > 100
        Assert.False(fourth.IsCompleted);
        second.Dispose();
        (await fourth.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
        Assert.Equal(0, limiter.Active);

        var alone = await Assert.ThrowsAsync<CobraImageLimitException>(() => limiter.AcquireAsync(101, "huge", CancellationToken.None).AsTask());
        Assert.Equal("MaxImageBytesInFlight", alone.LimitName);
    }

    [Fact]
    public async Task A_cancelled_waiter_leaves_no_trace()
    {
        var limiter = new ImageDecodeLimiter(maxConcurrent: 1, maxBytes: 100);
        var held = await limiter.AcquireAsync(1, "a", CancellationToken.None);
        using var cancel = new CancellationTokenSource();
        var waiting = limiter.AcquireAsync(1, "b", cancel.Token).AsTask();
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);

        held.Dispose();
        (await limiter.AcquireAsync(100, "c", CancellationToken.None)).Dispose();
        Assert.Equal(0, limiter.Active);
    }

    public static TheoryData<string> NonImageParts => ["text/plain", "application/octet-stream", "application/pdf", "audio/wav"];

    [Theory]
    [MemberData(nameof(NonImageParts))]
    public async Task Png_bytes_declared_as_something_else_are_refused_not_dropped(string mediaType)
    {
        using var client = await CobraChatClientTests.Load();
        ChatMessage Turn(AIContent part) => new(ChatRole.User, [new TextContent("What is this?"), part]);

        var data = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([Turn(new DataContent(Png, mediaType))]));
        Assert.Contains(mediaType, data.Message, StringComparison.Ordinal);
        Assert.Contains("not an image", data.Message, StringComparison.Ordinal);

        var uri = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([Turn(new UriContent($"data:{mediaType};base64,{Convert.ToBase64String(Png)}", "image/png"))]));
        Assert.Contains("not an image", uri.Message, StringComparison.Ordinal);

        var answer = await client.GetResponseAsync([Turn(new DataContent(Png, "image/png"))], new ChatOptions { MaxOutputTokens = 4 });
        Assert.NotEmpty(answer.Text);
    }
}
