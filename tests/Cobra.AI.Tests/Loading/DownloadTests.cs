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
    public async Task A_cut_download_resumes_within_the_same_call()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "cut";
        var (exit, _, error) = await Download();
        Assert.True(exit == 0, error);
        Assert.Contains("han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt", hub.RangeRequests);
        Assert.Empty(Directory.EnumerateFiles(cache, "*.incomplete", SearchOption.AllDirectories));
        await AssertGeneratesGoldenIds();
    }

    [Fact]
    public async Task Files_cut_on_every_transfer_and_a_500_and_a_429_still_complete_in_one_call()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "cut-always";
        hub.Failures["timm/vit_so400m_patch14_siglip_384.webli/model.safetensors"] = "cut-always";
        hub.Failures["timm/vit_large_patch14_reg4_dinov2.lvd142m/model.safetensors"] = "500-once";
        hub.Failures["xiuyul/mamba-2.8b-zephyr/tokenizer.json"] = "429-once";
        var (exit, output, error) = await Download();
        Assert.True(exit == 0, error);
        Assert.Contains("verified", output, StringComparison.Ordinal);
        Assert.True(hub.RangeRequests.Count(r => r == "han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt") >= 5, "a 600 kB file cut every 64 kB needs many resumes");
        Assert.False(hub.Failures.ContainsKey("xiuyul/mamba-2.8b-zephyr/tokenizer.json"), "the 429 was answered and retried");
        Assert.Empty(Directory.EnumerateFiles(cache, "*.incomplete", SearchOption.AllDirectories));
        await AssertGeneratesGoldenIds();
    }

    [Fact]
    public async Task A_hub_that_keeps_failing_gives_up_after_bounded_attempts_with_a_clear_error()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "500";
        var (exit, _, error) = await Download();
        Assert.Equal(1, exit);
        Assert.Contains("500", error, StringComparison.Ordinal);
        Assert.Contains("5 attempts in a row failed", error, StringComparison.Ordinal);
        Assert.Equal(DownloadRetryPolicy.Default.MaxAttempts, hub.Requests.Count(r => r.Path.EndsWith("latest-checkpoint.pt", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task The_token_goes_to_the_hub_but_not_to_a_redirect_on_another_origin()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "redirect-away";
        Environment.SetEnvironmentVariable("HF_TOKEN", "hf_secret");
        try
        {
            var (exit, _, error) = await Download();
            Assert.True(exit == 0, error);
        }
        finally
        {
            Environment.SetEnvironmentVariable("HF_TOKEN", null);
        }

        var onHub = hub.Requests.Where(r => r.Origin == hub.Endpoint).ToList();
        var onCdn = hub.Requests.Where(r => r.Origin == hub.CdnEndpoint).ToList();
        Assert.NotEmpty(onCdn);
        Assert.All(onHub, r => Assert.Equal("Bearer hf_secret", r.Authorization));
        Assert.All(onCdn, r => Assert.Null(r.Authorization));
    }

    [Fact]
    public async Task Transfers_that_never_get_further_give_up_after_the_attempt_limit()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "no-range-cut";
        using var http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false });
        var fast = DownloadRetryPolicy.Default with { BaseDelay = TimeSpan.FromMilliseconds(1), MaxDelay = TimeSpan.FromMilliseconds(5) };
        var downloader = new HubDownloader(http, hub.Endpoint, cache, null, fast);
        var e = await Assert.ThrowsAsync<IOException>(() => ModelDownload.RunAsync(downloader, "cobra+3b", "main", null, default));
        Assert.Contains("latest-checkpoint.pt", e.Message, StringComparison.Ordinal);
        Assert.Contains($"{fast.MaxAttempts} attempts in a row failed", e.Message, StringComparison.Ordinal);
        // The first attempt made progress (nothing was there, it counts as the first failure), then no restart got further.
        Assert.Equal(fast.MaxAttempts, hub.Requests.Count(r => r.Method == "GET" && r.Path.EndsWith("latest-checkpoint.pt", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task A_redirect_without_file_headers_is_followed()
    {
        hub.Failures["xiuyul/mamba-2.8b-zephyr/config.json"] = "moved-once";
        var (exit, _, error) = await Download();
        Assert.True(exit == 0, error);
        Assert.Equal(2, hub.Requests.Count(r => r.Method == "HEAD" && r.Path.EndsWith("mamba-2.8b-zephyr/resolve/main/config.json", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task A_redirect_to_plain_http_elsewhere_is_refused()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "redirect-insecure";
        var (exit, _, error) = await Download();
        Assert.Equal(1, exit);
        Assert.Contains("http://cdn.example.invalid", error, StringComparison.Ordinal);
        Assert.Contains("must use https", error, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFiles(cache, "*.incomplete", SearchOption.AllDirectories));
    }

    [Theory]
    [InlineData("http://hub.example.com")]
    [InlineData("ftp://127.0.0.1:1")]
    public async Task Plain_http_to_a_non_loopback_hub_is_refused(string endpoint)
    {
        Environment.SetEnvironmentVariable("HF_ENDPOINT", endpoint);
        var (exit, _, error) = await Download();
        Assert.Equal(1, exit);
        Assert.Contains("must use https", error, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(cache));
    }

    [Theory]
    [InlineData("--model-id", "../../escaped")]
    [InlineData("--model-id", "a/../../../escaped")]
    [InlineData("--revision", "../../../escaped")]
    [InlineData("--revision", "/etc")]
    public async Task Model_ids_and_revisions_that_leave_the_cache_are_refused(string option, string value)
    {
        string outside = Path.Combine(Path.GetDirectoryName(cache)!, "escaped");
        var (exit, _, error) = await Run(default, "download", "--cache-dir", cache, option, value);
        Assert.Equal(1, exit);
        Assert.Contains(value, error, StringComparison.Ordinal);
        Assert.Contains("not", error, StringComparison.Ordinal);
        Assert.False(Directory.Exists(outside) || File.Exists(outside));
        Assert.Empty(hub.Requests);
    }

    [Fact]
    public async Task A_commit_from_the_hub_that_is_no_hash_is_refused()
    {
        hub.Failures["han1997/cobra/cobra+3b/config.json"] = "bad-commit";
        var (exit, _, error) = await Download();
        Assert.Equal(1, exit);
        Assert.Contains("X-Repo-Commit", error, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFiles(Path.GetDirectoryName(cache)!, "escaped*"));
    }

    [Fact]
    public async Task A_file_without_a_hash_is_verified_by_size_and_the_user_is_told()
    {
        hub.Failures["xiuyul/mamba-2.8b-zephyr/tokenizer.json"] = "no-hash";
        var (exit, _, error) = await Download();
        Assert.True(exit == 0, error);
        Assert.Contains("xiuyul/mamba-2.8b-zephyr/tokenizer.json: the hub gave no sha256", error, StringComparison.Ordinal);
        Assert.Contains("only its size", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_full_disk_gives_a_clear_error_and_leaves_no_partial_blob()
    {
        // Injected: the partial file's stream fails with ENOSPC after 100 kB (deterministic on every machine).
        using var http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false });
        var downloader = new HubDownloader(http, hub.Endpoint, cache, null, openPartial: (path, append) => new FullDiskStream(path, append, 100_000));
        var e = await Assert.ThrowsAnyAsync<IOException>(() => ModelDownload.RunAsync(downloader, "cobra+3b", "main", null, default));
        Assert.Contains("latest-checkpoint.pt: not enough disk space", e.Message, StringComparison.Ordinal);
        Assert.Contains("nothing was kept", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFiles(cache, "*.incomplete", SearchOption.AllDirectories));
        Assert.Single(Directory.EnumerateFiles(Path.Combine(cache, "models--han1997--cobra", "blobs")));          // config.json only
        Assert.Equal(1, hub.Requests.Count(r => r.Method == "GET" && r.Path.EndsWith("latest-checkpoint.pt", StringComparison.Ordinal)));   // not retried
    }

    [Fact]
    public async Task A_full_tmpfs_gives_a_clear_error_and_leaves_no_partial_blob()
    {
        // A real 1 MiB tmpfs when this process may mount one (root on Linux); the tiny kit needs about 1.5 MB.
        string mount = Directory.CreateTempSubdirectory("cobra-tmpfs-").FullName;
        if (!TryMountTmpfs(mount, "1m"))
        {
            Directory.Delete(mount);
            return;                                                              // not root: the injected test above covers it
        }

        try
        {
            var (exit, _, error) = await Run(default, "download", "--cache-dir", mount);
            Assert.Equal(1, exit);
            Assert.Contains("not enough disk space", error, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
            Assert.Empty(Directory.EnumerateFiles(mount, "*.incomplete", SearchOption.AllDirectories));
        }
        finally
        {
            using var umount = System.Diagnostics.Process.Start("umount", mount);
            umount.WaitForExit();
            Directory.Delete(mount, recursive: true);
        }
    }

    private static bool TryMountTmpfs(string path, string size)
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            return false;
        }

        try
        {
            using var mount = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("mount", ["-t", "tmpfs", "-o", $"size={size}", "tmpfs", path]) { RedirectStandardError = true });
            mount!.WaitForExit();
            return mount.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>A file stream that fails like a full disk (ENOSPC) once <c>limit</c> bytes are written.</summary>
    private sealed class FullDiskStream(string path, bool append, long limit) : FileStream(path, append ? FileMode.Append : FileMode.Create, FileAccess.Write)
    {
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (Length + buffer.Length > limit)
            {
                throw new IOException("No space left on device", 28);
            }

            await base.WriteAsync(buffer, cancellationToken);
        }
    }

    [Fact]
    public void Retry_waits_double_up_to_a_cap_honour_retry_after_and_resume_at_once_after_progress()
    {
        var policy = DownloadRetryPolicy.Default;
        Assert.Equal(TimeSpan.FromSeconds(1), policy.Delay(1, null, madeProgress: false));
        Assert.Equal(TimeSpan.FromSeconds(4), policy.Delay(3, null, madeProgress: false));
        Assert.Equal(policy.MaxDelay, policy.Delay(12, null, madeProgress: false));
        Assert.Equal(TimeSpan.FromSeconds(7), policy.Delay(1, TimeSpan.FromSeconds(7), madeProgress: false));
        Assert.Equal(policy.MaxRetryAfter, policy.Delay(1, TimeSpan.FromHours(3), madeProgress: false));
        Assert.Equal(TimeSpan.Zero, policy.Delay(1, null, madeProgress: true));
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
    [InlineData("500", "try again later")]                                  // after the bounded retries
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
    public async Task A_slow_download_can_be_cancelled_and_resumed_by_the_next_run()
    {
        hub.Failures["han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt"] = "slow";
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(1.5));
        var (exit, _, _) = await Download(cancel.Token);
        Assert.Equal(1, exit);
        Assert.NotEmpty(Directory.EnumerateFiles(cache, "*.incomplete", SearchOption.AllDirectories));
        hub.Failures.Clear();
        Assert.Equal(0, (await Download()).Exit);
        Assert.Contains("han1997/cobra/cobra+3b/checkpoints/latest-checkpoint.pt", hub.RangeRequests);
        await AssertGeneratesGoldenIds();
    }

    public void Dispose()
    {
        Environment.SetEnvironmentVariable("HF_ENDPOINT", previousEndpoint);
        hub.Dispose();
        Directory.Delete(cache, recursive: true);
    }
}
