using System.Diagnostics;
using System.Runtime.CompilerServices;
using Cobra.AI.Chat;
using Microsoft.Extensions.AI;
using Xunit;

namespace Cobra.AI.Tests.Chat;

/// <summary>
/// File images stay inside their roots whatever the layout (links to folders, FIFOs, devices, folders), in the
/// chat client's resolver and in the vision tool, and every refusal is prompt and clear; a normal file works
/// right after.
/// </summary>
public sealed class ImageFileConfinementTests : IDisposable
{
    private static readonly byte[] Png = File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png"));
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(60);
    private readonly string root = Directory.CreateTempSubdirectory("cobra-root-").FullName;
    private readonly string outside = Directory.CreateTempSubdirectory("cobra-outside-").FullName;

    public ImageFileConfinementTests()
    {
        File.WriteAllBytes(Path.Combine(root, "scene.png"), Png);
        Directory.CreateDirectory(Path.Combine(root, "inner"));
        File.WriteAllBytes(Path.Combine(root, "inner", "scene.png"), Png);
        File.WriteAllBytes(Path.Combine(outside, "secret.png"), Png);
    }

    public void Dispose()
    {
        Directory.Delete(root, recursive: true);
        Directory.Delete(outside, recursive: true);
    }

    private ImageResolver Resolver(params string[] roots) =>
        new(new CobraModelOptions { AllowedImageRoots = roots.Length == 0 ? [root] : roots }, http: null);

    private static Task<(Cobra.AI.Imaging.RgbImage Image, string Key)> Resolve(ImageResolver resolver, string path) =>
        resolver.ResolveAsync(new UriContent(new Uri(path), "image/png"), CancellationToken.None).WaitAsync(Hang);

    private async Task AssertNormalFileWorks()
    {
        var (image, _) = await Resolve(Resolver(), Path.Combine(root, "scene.png"));
        Assert.Equal(100, image.Width);
    }

    [Fact]
    public async Task A_link_to_a_folder_outside_the_root_does_not_escape_it()
    {
        Directory.CreateSymbolicLink(Path.Combine(root, "escape"), outside);
        Directory.CreateSymbolicLink(Path.Combine(root, "inner", "deeper"), Path.Combine("..", "escape"));

        foreach (var path in new[] { Path.Combine(root, "escape", "secret.png"), Path.Combine(root, "inner", "deeper", "secret.png") })
        {
            var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(), path));
            Assert.Contains("not inside an allowed folder", e.Message, StringComparison.Ordinal);
        }

        await AssertNormalFileWorks();
    }

    [Fact]
    public async Task A_link_loop_is_refused()
    {
        File.CreateSymbolicLink(Path.Combine(root, "a"), Path.Combine(root, "b"));
        File.CreateSymbolicLink(Path.Combine(root, "b"), Path.Combine(root, "a"));
        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(), Path.Combine(root, "a", "scene.png")));
        Assert.Contains($"more than {AllowedPaths.MaxSymbolicLinks} symbolic links", e.Message, StringComparison.Ordinal);
        await AssertNormalFileWorks();
    }

    [Fact]
    public async Task Links_that_stay_inside_the_root_are_followed()
    {
        Directory.CreateSymbolicLink(Path.Combine(root, "alias"), "inner");
        File.CreateSymbolicLink(Path.Combine(root, "shortcut.png"), Path.Combine(root, "inner", "scene.png"));

        Assert.Equal(100, (await Resolve(Resolver(), Path.Combine(root, "alias", "scene.png"))).Image.Width);
        Assert.Equal(100, (await Resolve(Resolver(), Path.Combine(root, "shortcut.png"))).Image.Width);
    }

    [Fact]
    public async Task A_root_given_through_a_link_still_admits_its_files()
    {
        string linkedRoot = Path.Combine(outside, "root-link");
        Directory.CreateSymbolicLink(linkedRoot, root);
        Assert.Equal(100, (await Resolve(Resolver(linkedRoot), Path.Combine(linkedRoot, "scene.png"))).Image.Width);
        Assert.Equal(100, (await Resolve(Resolver(linkedRoot), Path.Combine(root, "scene.png"))).Image.Width);
    }

    [Fact]
    public async Task A_fifo_is_refused_without_blocking()
    {
        if (!OperatingSystem.IsLinux())
        {
            return; // the non-blocking open and handle check are Linux's; Windows has no FIFOs in the file system
        }

        string fifo = Path.Combine(root, "pipe.png");
        using (var mkfifo = Process.Start("mkfifo", fifo))
        {
            await mkfifo.WaitForExitAsync();
            Assert.Equal(0, mkfifo.ExitCode);
        }

        var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(), fifo));
        Assert.Contains("not a regular file", e.Message, StringComparison.Ordinal);
        await AssertNormalFileWorks();
    }

    [Fact]
    public async Task Folders_and_devices_are_refused()
    {
        var folder = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(), Path.Combine(root, "inner")));
        Assert.Contains("a directory, not a regular file", folder.Message, StringComparison.Ordinal);

        if (OperatingSystem.IsLinux())
        {
            var device = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver("/dev"), "/dev/zero"));
            Assert.Contains("a character device, not a regular file", device.Message, StringComparison.Ordinal);

            File.CreateSymbolicLink(Path.Combine(root, "zero.png"), "/dev/zero");
            var linked = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => Resolve(Resolver(), Path.Combine(root, "zero.png")));
            Assert.Contains("not inside an allowed folder", linked.Message, StringComparison.Ordinal);
        }

        await AssertNormalFileWorks();
    }

    [Fact]
    public async Task Missing_and_oversized_files_are_named()
    {
        await Assert.ThrowsAsync<FileNotFoundException>(() => Resolve(Resolver(), Path.Combine(root, "absent.png")));
        var resolver = new ImageResolver(new CobraModelOptions { AllowedImageRoots = [root], MaxImageBytes = 100 }, http: null);
        var e = await Assert.ThrowsAsync<CobraImageLimitException>(() => Resolve(resolver, Path.Combine(root, "scene.png")));
        Assert.Equal("MaxImageBytes", e.LimitName);
        await AssertNormalFileWorks();
    }

    [Fact]
    public async Task The_vision_tool_turns_every_file_failure_into_error_text()
    {
        string fifo = Path.Combine(root, "pipe.png");
        if (OperatingSystem.IsLinux())
        {
            using var mkfifo = Process.Start("mkfifo", fifo);
            await mkfifo.WaitForExitAsync();
        }

        Directory.CreateSymbolicLink(Path.Combine(root, "escape"), outside);
        var vision = new EchoVision();
        var options = new CobraImageReferenceOptions { AllowedRoots = [root], MaxImageBytes = 1 << 20 };
        var cases = new List<(string Reference, string Problem)>
        {
            (Path.Combine(root, "escape", "secret.png"), "not inside an allowed folder"),
            (Path.Combine(root, "inner"), "not a regular file"),
            (Path.Combine(root, "absent.png"), "not found"),
            ("/dev/zero", "not inside an allowed folder"),
            // ".." after a link climbs from the link's target, as the kernel does: here out of the root.
            (root + "/escape/../scene.png", "not inside an allowed folder"),
        };
        if (OperatingSystem.IsLinux())
        {
            cases.Add((fifo, "not a regular file"));
        }

        foreach (var (reference, problem) in cases)
        {
            string result = await CobraVisionTools.DescribeImageAsync(vision, options, reference, null).WaitAsync(Hang);
            Assert.StartsWith(CobraVisionTools.ErrorPrefix, result, StringComparison.Ordinal);
            Assert.Contains(problem, result, StringComparison.Ordinal);
        }

        var devices = new CobraImageReferenceOptions { AllowedRoots = ["/dev"] };
        if (OperatingSystem.IsLinux())
        {
            string zero = await CobraVisionTools.DescribeImageAsync(vision, devices, "/dev/zero", null).WaitAsync(Hang);
            Assert.Equal(CobraVisionTools.ErrorPrefix + "Image file '/dev/zero' refused: it is a character device, not a regular file.", zero);
        }

        Assert.Equal(0, vision.Calls);
        string ok = await CobraVisionTools.DescribeImageAsync(vision, options, Path.Combine(root, "scene.png"), null);
        Assert.Equal(CobraVisionTools.UntrustedPrefix + $"{Png.Length} bytes", ok);
    }

    [Fact]
    public async Task The_vision_tool_fetches_remote_images_under_the_same_rules()
    {
        using var server = new LoopbackImageServer();
        server.Routes["/img.png"] = (200, "", Png);
        server.Routes["/hop"] = (302, "Location: http://169.254.169.254/latest/meta-data/\r\n", []);
        var vision = new EchoVision();
        var options = new CobraImageReferenceOptions { AllowRemoteImages = true };

        string refused = await CobraVisionTools.DescribeImageAsync(vision, options, server.Url("/img.png"), null);
        Assert.StartsWith(CobraVisionTools.ErrorPrefix + "Remote image refused", refused, StringComparison.Ordinal);
        Assert.Empty(server.Requests);

        HttpClient Admit() => RemoteImageFetcher.CreateHttpClient(new HashSet<int> { server.Port });
        string redirected = await CobraVisionTools.DescribeImageAsync(vision, options, server.Url("/hop"), null, Admit, CancellationToken.None);
        Assert.StartsWith(CobraVisionTools.ErrorPrefix + "Remote image refused", redirected, StringComparison.Ordinal);

        string disabled = await CobraVisionTools.DescribeImageAsync(vision, new CobraImageReferenceOptions(), server.Url("/img.png"), null, Admit, CancellationToken.None);
        Assert.StartsWith(CobraVisionTools.ErrorPrefix + "Remote image refused", disabled, StringComparison.Ordinal);

        Assert.Equal(0, vision.Calls);
        string ok = await CobraVisionTools.DescribeImageAsync(vision, options, server.Url("/img.png"), null, Admit, CancellationToken.None);
        Assert.Equal(CobraVisionTools.UntrustedPrefix + $"{Png.Length} bytes", ok);
    }

    /// <summary>A vision client that reports the size of the image it was given.</summary>
    private sealed class EchoVision : IChatClient
    {
        public int Calls { get; private set; }

        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            Calls++;
            var data = messages.SelectMany(m => m.Contents).OfType<DataContent>().Single();
            return Task.FromResult(new ChatResponse(new ChatMessage(ChatRole.Assistant, $"{data.Data.Length} bytes")));
        }

        public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            foreach (var update in (await GetResponseAsync(messages, options, cancellationToken)).ToChatResponseUpdates())
            {
                yield return update;
            }
        }

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose()
        {
        }
    }
}
