namespace Cobra.AI.Loading;

/// <summary>What a model download did.</summary>
/// <param name="Paths">Snapshot paths of every file.</param>
/// <param name="Repaired">Cached files that no longer matched their hash and were fetched again.</param>
/// <param name="Warnings">Files that could be checked by size only, and why.</param>
internal sealed record ModelDownloadResult(IReadOnlyList<string> Paths, int Repaired, IReadOnlyList<string> Warnings);

/// <summary>
/// Fetches every file a Cobra model needs into the Hugging Face cache, in the order upstream's
/// <c>cobra.load</c> reads them: the run config (which names the LLM and vision backbones), the checkpoint,
/// the LLM config and tokenizer, then the towers (the smaller plain-timm SigLIP file when the hub has it).
/// </summary>
internal static class ModelDownload
{
    /// <summary><c>HF_HUB_OFFLINE</c> is set: nothing may be fetched.</summary>
    public static bool Offline => Environment.GetEnvironmentVariable("HF_HUB_OFFLINE") is "1" or "true" or "TRUE" or "yes" or "YES";

    /// <summary>
    /// Downloads (or verifies) all files of <paramref name="modelId"/> into <paramref name="cacheRoot"/> from
    /// <c>HF_ENDPOINT</c> with <c>HF_TOKEN</c>.
    /// </summary>
    /// <returns>The snapshot paths, how many cached files were fetched again because they no longer matched their
    /// hash, and what could not be verified by hash.</returns>
    public static async Task<ModelDownloadResult> RunAsync(string modelId, string cacheRoot, string revision, IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        HubNames.ValidateModelId(modelId);
        HubNames.ValidateRevision(revision);
        // No automatic redirects: the downloader follows them itself and decides per hop whether the token goes along.
        using var http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, ConnectTimeout = TimeSpan.FromSeconds(30) }) { Timeout = Timeout.InfiniteTimeSpan };
        var hub = new HubDownloader(http, HubDownloader.DefaultEndpoint(), cacheRoot, Environment.GetEnvironmentVariable("HF_TOKEN"));
        var paths = await RunAsync(hub, modelId, revision, progress, cancellationToken).ConfigureAwait(false);
        return new ModelDownloadResult(paths, hub.RepairedFiles, hub.Warnings);
    }

    /// <summary>Downloads (or verifies) all files through <paramref name="hub"/>; returns their snapshot paths.</summary>
    public static async Task<IReadOnlyList<string>> RunAsync(HubDownloader hub, string modelId, string revision, IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        HubNames.ValidateModelId(modelId);
        var paths = new List<string>();
        async Task<string?> Get(string repo, string file, bool required, string rev = "main")
        {
            var path = await hub.FetchAsync(repo, file, rev, required, progress, cancellationToken).ConfigureAwait(false);
            if (path is not null)
            {
                paths.Add(path);
            }

            return path;
        }

        string config = (await Get(CobraModelFiles.CobraRepo, $"{modelId}/config.json", true, revision).ConfigureAwait(false))!;
        var (llmId, visionId, _, _, _) = CobraModelFiles.ReadRunConfig(config);
        await Get(CobraModelFiles.CobraRepo, $"{modelId}/checkpoints/latest-checkpoint.pt", true, revision).ConfigureAwait(false);

        string llmRepo = CobraModelFiles.LlmRepos.TryGetValue(llmId, out var repo)
            ? repo
            : throw new InvalidDataException($"{config}: unknown llm_backbone_id '{llmId}'.");
        await Get(llmRepo, "config.json", true).ConfigureAwait(false);
        await Get(llmRepo, "tokenizer.json", true).ConfigureAwait(false);
        await Get(llmRepo, "tokenizer_config.json", false).ConfigureAwait(false);
        await Get(llmRepo, "special_tokens_map.json", false).ConfigureAwait(false);

        if (!visionId.StartsWith("dinosiglip-vit-so-", StringComparison.Ordinal))
        {
            throw new NotSupportedException($"{config}: vision backbone '{visionId}' is not supported.");
        }

        await Get(VisionTowerFiles.DinoRepo, "config.json", false).ConfigureAwait(false);
        if (await Get(VisionTowerFiles.DinoRepo, "model.safetensors", false).ConfigureAwait(false) is null)
        {
            await Get(VisionTowerFiles.DinoRepo, "pytorch_model.bin", true).ConfigureAwait(false);
        }

        if (await Get(VisionTowerFiles.WebliRepo, "model.safetensors", false).ConfigureAwait(false) is not null)
        {
            await Get(VisionTowerFiles.WebliRepo, "config.json", false).ConfigureAwait(false);
        }
        else
        {
            await Get(VisionTowerFiles.OpenClipRepo, "open_clip_config.json", false).ConfigureAwait(false);
            if (await Get(VisionTowerFiles.OpenClipRepo, "open_clip_model.safetensors", false).ConfigureAwait(false) is null)
            {
                await Get(VisionTowerFiles.OpenClipRepo, "open_clip_pytorch_model.bin", true).ConfigureAwait(false);
            }
        }

        return paths;
    }
}
