using System.CommandLine;
using Cobra.AI;
using Cobra.AI.Loading;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra download</c>: fetches (or re-verifies) every file the model needs into the Hugging Face cache, with
/// progress on stderr; exit code 0 only when all files verify. Endpoint from <c>HF_ENDPOINT</c>, token from
/// <c>HF_TOKEN</c>; with <c>HF_HUB_OFFLINE=1</c> it only checks the cache and says what is missing.
/// </summary>
internal static class DownloadCommand
{
    public static Command Create(CliContext cli)
    {
        var modelId = CliOptions.Text("--model-id", "ID", "The Cobra model id (default cobra+3b).");
        var cacheDir = CliOptions.Text("--cache-dir", "DIR", "The Hugging Face cache (default HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub).");
        var revision = CliOptions.Text("--revision", "REV", "Branch, tag or commit of the Cobra repo (default main).");
        var command = new Command("download", "Fetch (or verify) every model file into the Hugging Face cache: retries and resumes cut transfers, verifies sha256 (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).")
        {
            modelId, cacheDir, revision,
        };
        command.SetAction((parse, cancellationToken) => RunAsync(
            parse.GetValue(modelId) ?? "cobra+3b",
            parse.GetValue(cacheDir) ?? HuggingFaceCacheSource.DefaultRoot(),
            parse.GetValue(revision) ?? CobraModelComposition.DefaultRevision,
            cli,
            cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(string modelId, string cache, string revision, CliContext cli, CancellationToken cancellationToken)
    {
        var model = new CobraModelOptions { ModelId = modelId, CacheDirectory = cache };
        if (ModelDownload.Offline)
        {
            var files = await CobraModelComposition.ResolveFilesAsync(model, null, null, cancellationToken, revision).ConfigureAwait(false);
            await cli.Out.WriteLineAsync($"offline: all files of {modelId} are in {cache} ({files.CheckpointPath})").ConfigureAwait(false);
            return 0;
        }

        var result = await FetchAsync(modelId, cache, revision, cli, cancellationToken).ConfigureAwait(false);
        await cli.Out.WriteLineAsync($"{result.Paths.Count} files of {modelId} verified in {cache}").ConfigureAwait(false);
        return 0;
    }

    /// <summary>Fetches or verifies every file with progress, warnings and repairs on stderr.</summary>
    public static async Task<ModelDownloadResult> FetchAsync(string modelId, string cache, string revision, CliContext cli, CancellationToken cancellationToken)
    {
        var bar = new DownloadProgressBar(cli.Err, cli.ErrorIsTerminal);
        try
        {
            return await CobraModelComposition.DownloadAsync(modelId, cache, revision, bar, Notice(cli, bar), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            bar.Done();
        }
    }

    /// <summary>Notices from the composition root, as <c>cobra: ...</c> lines on stderr (after ending a progress line).</summary>
    public static Action<string> Notice(CliContext cli, DownloadProgressBar? bar) => message =>
    {
        bar?.Done();
        cli.Err.WriteLine($"cobra: {message}");
    };
}
