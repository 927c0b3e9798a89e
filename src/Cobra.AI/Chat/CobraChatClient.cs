using System.Diagnostics;
using System.Runtime.CompilerServices;
using Cobra.AI.Chat;
using Cobra.AI.Generation;
using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cobra.AI;

/// <summary>
/// An <see cref="IChatClient"/> that runs the Cobra vision-language model in-process. Thread-safe: concurrent
/// calls are queued on the model's inference thread and decoded together. A conversation's image travels as
/// <see cref="DataContent"/> or <see cref="UriContent"/> with an image media type. Each call's answer streams as
/// one assistant message; the last update carries the finish reason and the token usage, including the input
/// tokens reused from the previous turn's cached state.
/// </summary>
public sealed partial class CobraChatClient : IChatClient
{
    private readonly InferenceEngine engine;
    private readonly CobraModelOptions options;
    private readonly ImageResolver images;
    private readonly HttpClient? http;
    private readonly ILogger logger;
    private readonly ChatClientMetadata metadata;
    private int disposed;

    private CobraChatClient(InferenceEngine engine, CobraModelOptions options, HttpClient? http, ILogger logger)
    {
        this.engine = engine;
        this.options = options;
        this.http = http;
        this.logger = logger;
        images = new ImageResolver(options, http);
        metadata = new ChatClientMetadata("cobra", new Uri(Path.GetFullPath(options.ModelPath ?? options.CacheDirectory ?? HuggingFaceCacheSource.DefaultRoot())), options.ModelId);
    }

    /// <summary>Loads the model described by <paramref name="options"/> (copied; later changes have no effect).</summary>
    /// <param name="options">Where the model is and how to run it.</param>
    /// <param name="progress">Receives loading stages.</param>
    /// <param name="cancellationToken">Cancels loading.</param>
    /// <returns>A ready client; dispose it to free the model.</returns>
    /// <exception cref="ArgumentException">An option is invalid (named in the message).</exception>
    public static Task<CobraChatClient> LoadAsync(CobraModelOptions options, IProgress<CobraLoadProgress>? progress = null, CancellationToken cancellationToken = default) =>
        LoadAsync(options, null, progress, cancellationToken);

    /// <summary>Loads the model, logging through <paramref name="loggerFactory"/>.</summary>
    /// <param name="options">Where the model is and how to run it.</param>
    /// <param name="loggerFactory">Logging; null logs nothing.</param>
    /// <param name="progress">Receives loading stages.</param>
    /// <param name="cancellationToken">Cancels loading.</param>
    /// <returns>A ready client; dispose it to free the model.</returns>
    public static async Task<CobraChatClient> LoadAsync(CobraModelOptions options, ILoggerFactory? loggerFactory, IProgress<CobraLoadProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var settings = options.Snapshot();
        settings.Validate();
        var logger = (ILogger?)loggerFactory?.CreateLogger<CobraChatClient>() ?? NullLogger.Instance;
        if (settings.ModelPath is null && settings.AllowDownload && !ModelDownload.Offline)
        {
            var report = progress is null ? null : new Progress<DownloadProgress>(p => progress.Report(new CobraLoadProgress($"Downloading {p.Repo}/{p.File}", 1, 3)));
            await ModelDownload.RunAsync(settings.ModelId, settings.CacheDirectory ?? HuggingFaceCacheSource.DefaultRoot(), "main", report, cancellationToken).ConfigureAwait(false);
        }

        var pipeline = await Task.Run(() => LoadPipeline(settings, logger, progress, cancellationToken), cancellationToken).ConfigureAwait(false);
        var engine = new InferenceEngine(pipeline, settings.MaxConcurrentRequests, settings.ConversationCacheSize, logger);
        var http = settings.AllowRemoteImages ? new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false }) : null;
        return new CobraChatClient(engine, settings, http, logger);
    }

    private static CobraPipeline LoadPipeline(CobraModelOptions settings, ILogger logger, IProgress<CobraLoadProgress>? progress, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        progress?.Report(new CobraLoadProgress("Resolving model files", 1, 3));
        IModelFileSource source = settings.ModelPath is not null
            ? new HubMirrorSource(settings.ModelPath)
            : new HuggingFaceCacheSource(settings.CacheDirectory ?? HuggingFaceCacheSource.DefaultRoot());
        var files = CobraModelFiles.Resolve(source, settings.ModelId);
        TorchRuntime.EnsureInitialized(settings.TuneNativeRuntime);
        if (settings.CpuThreads is int threads)
        {
            TorchRuntime.SetCpuThreads(threads);
        }

        var device = TorchPlacement.ParseDevice(settings.Device);
        var precision = TorchPlacement.ParsePrecision(settings.Precision, device);
        cancellationToken.ThrowIfCancellationRequested();
        progress?.Report(new CobraLoadProgress("Loading weights", 2, 3));
        var pipeline = CobraPipeline.Load(files, device, precision, settings.UseManagedCpuKernels);
        progress?.Report(new CobraLoadProgress("Ready", 3, 3));
        LogLoaded(logger, settings.ModelId, device.ToString(), precision.ToString(), pipeline.Model.ParameterCount, clock.Elapsed.TotalSeconds);
        return pipeline;
    }

    /// <summary>Tensors alive on the inference thread (diagnostics).</summary>
    internal long LiveTensorCount => engine.LiveTensorCount;

    /// <summary>Requests being decoded right now (diagnostics).</summary>
    internal int ActiveRequests => engine.ActiveCount;

    /// <inheritdoc />
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        GetStreamingResponseAsync(messages, options, cancellationToken).ToChatResponseAsync(cancellationToken);

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        var request = await ToRequestAsync(messages, options, cancellationToken).ConfigureAwait(false);

        // A consumer that stops enumerating early also stops the generation and frees its state.
        using var abandon = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var events = engine.Submit(request, abandon.Token);
        string responseId = "cobra-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        try
        {
            await foreach (var generationEvent in events.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                yield return ToUpdate(generationEvent, responseId, created);
            }
        }
        finally
        {
            await abandon.CancelAsync().ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        return serviceKey is not null ? null
            : serviceType == typeof(ChatClientMetadata) ? metadata
            : serviceType == typeof(CobraModelOptions) ? options.Snapshot()
            : serviceType.IsInstanceOfType(this) ? this
            : serviceType.IsInstanceOfType(engine.Pipeline.Model) ? engine.Pipeline.Model
            : null;
    }

    /// <summary>Frees the model. Idempotent; must not be called while requests are in flight.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        engine.Dispose();
        http?.Dispose();
    }

    private async Task<GenerationRequest> ToRequestAsync(IEnumerable<ChatMessage> messages, ChatOptions? chatOptions, CancellationToken cancellationToken)
    {
        var prompt = ChatRequestMapper.ToCobraPrompt(messages, chatOptions, options, logger);
        prompt.Sampling.Validate();
        RgbImage? image = null;
        string? imageKey = null;
        if (prompt.Image is not null)
        {
            (image, imageKey) = await images.ResolveAsync(prompt.Image, cancellationToken).ConfigureAwait(false);
        }

        var ids = engine.Pipeline.EncodePrompt(prompt.Turns);
        return new GenerationRequest(ids, image, imageKey, prompt.Sampling, prompt.StopSequences);
    }

    private ChatResponseUpdate ToUpdate(GenerationEvent generationEvent, string responseId, DateTimeOffset created)
    {
        var update = new ChatResponseUpdate { Role = ChatRole.Assistant, ResponseId = responseId, MessageId = responseId, CreatedAt = created, ModelId = options.ModelId };
        switch (generationEvent)
        {
            case TextGenerated text:
                update.Contents.Add(new TextContent(text.Text));
                break;
            case GenerationCompleted done:
                update.FinishReason = done.Reason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;
                update.Contents.Add(new UsageContent(new UsageDetails
                {
                    InputTokenCount = done.InputTokens,
                    OutputTokenCount = done.OutputTokens,
                    TotalTokenCount = done.InputTokens + done.OutputTokens,
                    CachedInputTokenCount = done.CachedInputTokens,
                }));
                update.RawRepresentation = done;
                break;
        }

        return update;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Loaded Cobra {ModelId} on {Device} in {Precision}: {Parameters} parameters in {Seconds:F1} s")]
    private static partial void LogLoaded(ILogger logger, string modelId, string device, string precision, long parameters, double seconds);
}
