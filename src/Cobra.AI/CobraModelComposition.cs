using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Microsoft.Extensions.Logging;
using TorchSharp;

namespace Cobra.AI;

/// <summary>
/// The one place that turns <see cref="CobraModelOptions"/> into model files, a device and a precision, for every
/// <c>cobra</c> command and for <see cref="CobraChatClient"/>: a hub-mirror folder (<see cref="CobraModelOptions.ModelPath"/>)
/// or the Hugging Face cache, downloading what is missing first when <see cref="CobraModelOptions.AllowDownload"/> is
/// set and <c>HF_HUB_OFFLINE</c> is not (then the error names the missing file).
/// </summary>
internal static partial class CobraModelComposition
{
    /// <summary>The revision a cache lookup or download uses when none is named.</summary>
    public const string DefaultRevision = "main";

    /// <summary>The Hugging Face cache root the options name, else the default one.</summary>
    public static string CacheRoot(CobraModelOptions options) => options.CacheDirectory ?? HuggingFaceCacheSource.DefaultRoot();

    /// <summary>Where files are looked up.</summary>
    public static IModelFileSource Source(CobraModelOptions options, string revision = DefaultRevision)
    {
        HubNames.ValidateModelId(options.ModelId);
        HubNames.ValidateRevision(revision);
        return options.ModelPath is not null
            ? new HubMirrorSource(options.ModelPath)
            : new HuggingFaceCacheSource(CacheRoot(options), revision);
    }

    /// <summary>
    /// Resolves every model file; when some are missing from the cache and downloading is allowed, fetches the
    /// model (progress on <paramref name="progress"/>, what happens on <paramref name="notice"/>) and resolves again.
    /// </summary>
    public static async Task<CobraModelFiles> ResolveFilesAsync(CobraModelOptions options, IProgress<DownloadProgress>? progress, Action<string>? notice, CancellationToken cancellationToken, string revision = DefaultRevision)
    {
        var source = Source(options, revision);
        try
        {
            return CobraModelFiles.Resolve(source, options.ModelId);
        }
        catch (FileNotFoundException) when (options.ModelPath is null && options.AllowDownload && !ModelDownload.Offline)
        {
            notice?.Invoke($"{options.ModelId} is not complete in {CacheRoot(options)}; downloading it.");
            await DownloadAsync(options.ModelId, CacheRoot(options), revision, progress, notice, cancellationToken).ConfigureAwait(false);
            return CobraModelFiles.Resolve(source, options.ModelId);
        }
    }

    /// <summary>Fetches or verifies every file of the model; warnings and repairs go to <paramref name="notice"/>.</summary>
    public static async Task<ModelDownloadResult> DownloadAsync(string modelId, string cacheRoot, string revision, IProgress<DownloadProgress>? progress, Action<string>? notice, CancellationToken cancellationToken)
    {
        var result = await ModelDownload.RunAsync(modelId, cacheRoot, revision, progress, cancellationToken).ConfigureAwait(false);
        foreach (var warning in result.Warnings)
        {
            notice?.Invoke("warning: " + warning);
        }

        if (result.Repaired > 0)
        {
            notice?.Invoke($"{result.Repaired} cached file(s) did not match their hash and were downloaded again.");
        }

        return result;
    }

    /// <summary>
    /// The device and precision the options ask for (<see cref="ArgumentException"/> naming a bad value), after
    /// the process-wide CPU runtime settings (<see cref="CobraModelOptions.TuneNativeRuntime"/>,
    /// <see cref="CobraModelOptions.CpuThreads"/>) are applied.
    /// </summary>
    public static (torch.Device Device, Precision Precision) ResolvePlacement(CobraModelOptions options)
    {
        TorchRuntime.EnsureInitialized(options.TuneNativeRuntime);
        if (options.CpuThreads is int threads)
        {
            TorchRuntime.SetCpuThreads(threads);
        }

        var device = TorchPlacement.ParseDevice(options.Device);
        return (device, TorchPlacement.ParsePrecision(options.Precision, device));
    }

    /// <summary>A notice sink that logs through <paramref name="logger"/>.</summary>
    public static Action<string> LogTo(ILogger logger) => message => LogNotice(logger, message);

    [LoggerMessage(Level = LogLevel.Information, Message = "Cobra model files: {Message}")]
    private static partial void LogNotice(ILogger logger, string message);
}
