using System.Text.Json;
using Cobra.AI.Loading;
using Cobra.Cli;
using Xunit;

namespace Cobra.AI.Tests.Loading;

/// <summary><c>cobra download</c> against a loopback fake hub serving the tiny-a kit, with injected failures.</summary>
[Collection(HubEnvironment.Name)]
public sealed class DownloadTests : IDisposable
{
    private readonly FakeHub hub = new(Golden.TinyAHub);
    private readonly string cache = Directory.CreateTempSubdirectory("cobra-hf-").FullName;
    private readonly string? previousEndpoint = Environment.GetEnvironmentVariable("HF_ENDPOINT");

    public DownloadTests() => Environment.SetEnvironmentVariable("HF_ENDPOINT", hub.Endpoint);

    private static Task<(int Exit, string Out, string Err)> Run(CancellationToken cancellationToken, params string[] args) => CliRunner.RunAsync(cancellationToken, args);

    private Task<(int Exit, string Out, string Err)> Download(CancellationToken cancellationToken = default) =>
        Run(cancellationToken, "download", "--cache-dir", cache);

    private async Task AssertGeneratesGoldenIds()
    {
        var (exit, output, error) = await Run(default, "generate", "--cache-dir", cache, "--prompt", "Write a short story about a cobra.", "--max-new-tokens", "16", "--json");
        Assert.True(exit == 0, error);
        using var expected = SafetensorsFile.Open(Golden.Expected("text_only"));
        Assert.Equal(Golden.Ids(expected, "decode.greedy_ids"), JsonDocument.Parse(output).RootElement.GetProperty("output_token_ids").EnumerateArray().Select(e => e.GetInt64()));
    }

    private string Blob(string repo, string file)
    {
        string snapshot = Path.Combine(cache, "models--" + repo.Replace("/", "--", StringComparison.Ordinal), "snapshots", FakeHub.Commit(repo), file);
        return new FileInfo(snapshot).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? snapshot;
    }

    [Fact]
    public async Task Download_then_generate_reproduces_the_golden_ids_in_the_python_cache_layout()
    {
        var (exit, output, error) = await Download();
        Assert.True(exit == 0, error);
        Assert.Contains("verified", output, StringComparison.Ordinal);
        string repoDir = Path.Combine(cache, "models--han1997--cobra");
        Assert.Equal(FakeHub.Commit("han1997/cobra"), File.ReadAllText(Path.Combine(repoDir, "refs", "main")));
        Assert.NotNull(new FileInfo(Path.Combine(repoDir, "snapshots", FakeHub.Commit("han1997/cobra"), "cobra+3b", "checkpoints", "latest-checkpoint.pt")).LinkTarget);
        Assert.False(Directory.Exists(Path.Combine(cache, "models--timm--ViT-SO400M-14-SigLIP-384")), "the smaller plain-timm SigLIP file should be preferred");
        await AssertGeneratesGoldenIds();

        // A second run verifies what is there and downloads nothing new.
        Assert.Equal(0, (await Download()).Exit);
    }

    [Fact]
    public async Task Generate_downloads_what_is_missing_with_a_progress_bar()
    {
        var (exit, output, error) = await Run(default, "generate", "--cache-dir", cache, "--prompt", "Write a short story about a cobra.", "--max-new-tokens", "16", "--json");
        Assert.True(exit == 0, error);
        Assert.Contains("downloading", error, StringComparison.Ordinal);
        Assert.Contains("MiB", error, StringComparison.Ordinal);
        using var expected = SafetensorsFile.Open(Golden.Expected("text_only"));
        Assert.Equal(Golden.Ids(expected, "decode.greedy_ids"), JsonDocument.Parse(output).RootElement.GetProperty("output_token_ids").EnumerateArray().Select(e => e.GetInt64()));
    }

    [Fact]
    public async Task The_chat_client_downloads_at_load_when_allowed()
    {
        using var client = await CobraChatClient.LoadAsync(new CobraModelOptions { CacheDirectory = cache, AllowDownload = true, Device = "cpu" });
        var reply = await client.GetResponseAsync([new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.User, "Hello")], new Microsoft.Extensions.AI.ChatOptions { MaxOutputTokens = 2 });
        Assert.NotEmpty(reply.Text);
    }

    [Fact]
    public async Task A_cut_download_resumes_from_the_partial_file()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "cut";
        var first = await Download();
        Assert.Equal(1, first.Exit);
        Assert.Contains("interrupted", first.Err, StringComparison.Ordinal);
        Assert.NotEmpty(Directory.EnumerateFiles(cache, "*.incomplete", SearchOption.AllDirectories));

        var second = await Download();
        Assert.True(second.Exit == 0, second.Err);
        Assert.Contains("han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt", hub.RangeRequests);
        Assert.Empty(Directory.EnumerateFiles(cache, "*.incomplete", SearchOption.AllDirectories));
        await AssertGeneratesGoldenIds();
    }

    [Fact]
    public async Task A_wrong_hash_is_rejected_and_nothing_corrupt_is_kept()
    {
        hub.Failures["xiuyul/mamba-2.8b-zephyr/tokenizer.json"] = "corrupt";
        var (exit, _, error) = await Download();
        Assert.Equal(1, exit);
        Assert.Contains("xiuyul/mamba-2.8b-zephyr/tokenizer.json", error, StringComparison.Ordinal);
        Assert.Contains("do not match", error, StringComparison.Ordinal);
        string repoDir = Path.Combine(cache, "models--xiuyul--mamba-2.8b-zephyr");
        Assert.False(File.Exists(Path.Combine(repoDir, "snapshots", FakeHub.Commit("xiuyul/mamba-2.8b-zephyr"), "tokenizer.json")));
        Assert.Single(Directory.EnumerateFiles(Path.Combine(repoDir, "blobs")));                    // config.json only
        Assert.Empty(Directory.EnumerateFiles(cache, "*.incomplete", SearchOption.AllDirectories));
    }

    [Theory]
    [InlineData("401", "HF_TOKEN")]
    [InlineData("500", "try again later")]
    [InlineData("404", "not found")]
    public async Task Hub_errors_give_clear_messages(string failure, string message)
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = failure;
        var (exit, _, error) = await Download();
        Assert.Equal(1, exit);
        Assert.Contains("latest-checkpoint.pt", error, StringComparison.Ordinal);
        Assert.Contains(message, error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_corrupted_cached_file_is_detected_and_fetched_again()
    {
        Assert.Equal(0, (await Download()).Exit);
        string blob = Blob("timm/vit_large_patch14_reg4_dinov2.lvd142m", "model.safetensors");
        var bytes = await File.ReadAllBytesAsync(blob);
        bytes[bytes.Length - 1] ^= 0x55;
        await File.WriteAllBytesAsync(blob, bytes);

        var (exit, _, error) = await Download();
        Assert.True(exit == 0, error);
        Assert.Contains("did not match their hash", error, StringComparison.Ordinal);
        await AssertGeneratesGoldenIds();
    }

    [Fact]
    public async Task Concurrent_downloads_of_the_same_files_both_succeed()
    {
        var results = await Task.WhenAll(Download(), Download());
        Assert.All(results, r => Assert.True(r.Exit == 0, r.Err));
        await AssertGeneratesGoldenIds();
    }

    [Fact]
    public async Task A_slow_download_can_be_cancelled_and_resumed()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "slow";
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(1.5));
        var (exit, _, _) = await Download(cancel.Token);
        Assert.Equal(1, exit);
        hub.Failures.Clear();
        Assert.Equal(0, (await Download()).Exit);
        await AssertGeneratesGoldenIds();
    }

    public void Dispose()
    {
        Environment.SetEnvironmentVariable("HF_ENDPOINT", previousEndpoint);
        hub.Dispose();
        Directory.Delete(cache, recursive: true);
    }
}
