using Cobra.AI.Loading;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra download</c>: fetches (or re-verifies) every file the model needs into the Hugging Face cache, with a
/// progress bar; exit code 0 only when all files verify. Endpoint from <c>HF_ENDPOINT</c>, token from
/// <c>HF_TOKEN</c>; with <c>HF_HUB_OFFLINE=1</c> it only checks the cache and says what is missing.
/// </summary>
internal static class DownloadCommand
{
    private static readonly HashSet<string> ValueOptions = ["model-id", "cache-dir", "revision"];

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var cli = CliArguments.Parse(args, ValueOptions, new HashSet<string>());
        string modelId = cli.Get("model-id") ?? "cobra+3b";
        string cache = cli.Get("cache-dir") ?? HuggingFaceCacheSource.DefaultRoot();
        string revision = cli.Get("revision") ?? "main";
        if (ModelDownload.Offline)
        {
            var files = CobraModelFiles.Resolve(new HuggingFaceCacheSource(cache, revision), modelId);
            await stdout.WriteLineAsync($"offline: all files of {modelId} are in {cache} ({files.CheckpointPath})").ConfigureAwait(false);
            return 0;
        }

        int count = await FetchAsync(modelId, cache, revision, stderr, cancellationToken).ConfigureAwait(false);
        await stdout.WriteLineAsync($"{count} files of {modelId} verified in {cache}").ConfigureAwait(false);
        return 0;
    }

    /// <summary>Fetches or verifies every file with a progress bar on <paramref name="log"/>; returns the file count.</summary>
    public static async Task<int> FetchAsync(string modelId, string cache, string revision, TextWriter log, CancellationToken cancellationToken)
    {
        var bar = new ProgressBar(log);
        var (paths, repaired) = await ModelDownload.RunAsync(modelId, cache, revision, bar, cancellationToken).ConfigureAwait(false);
        bar.Done();
        if (repaired > 0)
        {
            await log.WriteLineAsync($"cobra: {repaired} cached file(s) did not match their hash and were downloaded again.").ConfigureAwait(false);
        }

        return paths.Count;
    }

    /// <summary>One line per file, redrawn in place: name, bytes, percent.</summary>
    private sealed class ProgressBar(TextWriter output) : IProgress<DownloadProgress>
    {
        private string? current;

        public void Report(DownloadProgress value)
        {
            string name = $"{value.Repo}/{value.File}";
            if (current is not null && current != name)
            {
                output.WriteLine();
            }

            current = name;
            string amount = value.Total is long total && total > 0
                ? $"{value.Bytes / 1048576.0,9:F1} / {total / 1048576.0:F1} MiB {100.0 * value.Bytes / total,5:F1}%"
                : $"{value.Bytes / 1048576.0,9:F1} MiB";
            output.Write($"\r{name}  {amount}");
        }

        public void Done()
        {
            if (current is not null)
            {
                output.WriteLine();
            }
        }
    }
}
