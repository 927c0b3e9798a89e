using System.Diagnostics;
using System.Runtime.CompilerServices;
using Cobra.AI.Chat;
using Cobra.AI.Generation;
using Cobra.AI.Generation.Constrained;
using Cobra.AI.Generation.StateStore;
using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Caching.Distributed;
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
    private readonly ConversationStore conversations;
    private readonly System.Diagnostics.Metrics.Meter meter;
    private int disposed;

    private CobraChatClient(InferenceEngine engine, CobraModelOptions options, HttpClient? http, ILogger logger)
    {
        this.engine = engine;
        this.options = options;
        this.http = http;
        this.logger = logger;
        images = new ImageResolver(options, http);
        conversations = new ConversationStore(options.MaxConversations, options.MaxConversationBytes);
        meter = CreateMeter(engine);
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
    public static Task<CobraChatClient> LoadAsync(CobraModelOptions options, ILoggerFactory? loggerFactory, IProgress<CobraLoadProgress>? progress = null, CancellationToken cancellationToken = default) =>
        LoadAsync(options, loggerFactory, null, progress, cancellationToken);

    /// <summary>Loads the model with <paramref name="stateStore"/> (from a container) as its distributed conversation state store.</summary>
    internal static async Task<CobraChatClient> LoadAsync(CobraModelOptions options, ILoggerFactory? loggerFactory, IDistributedCache? stateStore, IProgress<CobraLoadProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        var settings = options.Snapshot();
        settings.Validate();
        var logger = (ILogger?)loggerFactory?.CreateLogger<CobraChatClient>() ?? NullLogger.Instance;
        progress?.Report(new CobraLoadProgress("Resolving model files", 1, 3));
        var report = progress is null ? null : new Progress<DownloadProgress>(p => progress.Report(new CobraLoadProgress($"Downloading {p.Repo}/{p.File}", 1, 3)));
        var files = await CobraModelComposition.ResolveFilesAsync(settings, report, CobraModelComposition.LogTo(logger), cancellationToken).ConfigureAwait(false);
        var pipeline = await Task.Run(() => LoadPipeline(settings, files, logger, progress, cancellationToken), cancellationToken).ConfigureAwait(false);
        DistributedStateStore? store;                                             // [state-store] optional second level (issue 13)
        try
        {
            store = await Task.Run(() => StateStoreFactory.Create(settings, pipeline, stateStore, logger), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            pipeline.Dispose();
            throw;
        }

        var engine = new InferenceEngine(pipeline, ToEngineSettings(settings), logger, store);
        var http = ImageResolver.CreateHttpClient(settings);
        return new CobraChatClient(engine, settings, http, logger);
    }

    private static CobraPipeline LoadPipeline(CobraModelOptions settings, CobraModelFiles files, ILogger logger, IProgress<CobraLoadProgress>? progress, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var (device, precision) = CobraModelComposition.ResolvePlacement(settings);
        cancellationToken.ThrowIfCancellationRequested();
        progress?.Report(new CobraLoadProgress("Loading weights", 2, 3));
        var pipeline = CobraPipeline.Load(files, device, precision, settings.UseManagedCpuKernels);
        progress?.Report(new CobraLoadProgress("Ready", 3, 3));
        LogLoaded(logger, settings.ModelId, device.ToString(), precision.ToString(), pipeline.Model.ParameterCount, clock.Elapsed.TotalSeconds);
        return pipeline;
    }

    /// <summary>A client over a pipeline built in memory (benchmarks with random weights); owns it.</summary>
    internal static CobraChatClient FromPipeline(CobraPipeline pipeline, CobraModelOptions options, ILogger? logger = null)
    {
        var settings = options.Snapshot();
        settings.Validate();
        return new CobraChatClient(new InferenceEngine(pipeline, ToEngineSettings(settings), logger ?? NullLogger.Instance), settings, null, logger ?? NullLogger.Instance);
    }

    /// <summary>
    /// The engine's gauges and counters on the meter <c>Cobra.AI</c> (one per client, disposed with it), for
    /// OpenTelemetry: queue depth, admitted requests, decode batch rows, state-cache hits and misses, tokens, decode
    /// steps and their rows, and the engine thread's busy time (its utilisation).
    /// </summary>
    private static System.Diagnostics.Metrics.Meter CreateMeter(InferenceEngine engine)
    {
        var meter = new System.Diagnostics.Metrics.Meter("Cobra.AI");
        meter.CreateObservableGauge("cobra.engine.queue_depth", () => engine.Statistics.QueuedRequests, "{request}", "Requests waiting for admission");
        meter.CreateObservableGauge("cobra.engine.active_requests", () => engine.Statistics.ActiveRequests, "{request}", "Requests prefilling or decoding");
        meter.CreateObservableGauge("cobra.engine.batch_size", () => engine.Statistics.DecodingRows, "{row}", "Rows in the decode batch");
        meter.CreateObservableCounter("cobra.engine.cache.hits", () => engine.Statistics.StateCacheHits, "{lookup}", "Admissions that reused a state snapshot");
        meter.CreateObservableCounter("cobra.engine.cache.misses", () => engine.Statistics.StateCacheMisses, "{lookup}", "Admissions that found no snapshot");
        meter.CreateObservableGauge("cobra.engine.cache.bytes", () => engine.Statistics.StateCacheBytes, "By", "Bytes of state snapshots held");
        meter.CreateObservableCounter("cobra.engine.prompt_tokens", () => engine.Statistics.PromptTokens, "{token}", "Input positions admitted");
        meter.CreateObservableCounter("cobra.engine.cached_prompt_tokens", () => engine.Statistics.CachedPromptTokens, "{token}", "Input positions taken from snapshots");
        meter.CreateObservableCounter("cobra.engine.generated_tokens", () => engine.Statistics.GeneratedTokens, "{token}", "Tokens generated");
        meter.CreateObservableCounter("cobra.engine.decode_steps", () => engine.Statistics.DecodeSteps, "{step}", "Batched decode steps run");
        meter.CreateObservableCounter("cobra.engine.decode_step_rows", () => engine.Statistics.DecodeStepRows, "{row}", "Rows summed over the decode steps");
        meter.CreateObservableCounter("cobra.engine.busy_time", () => engine.Statistics.BusyTime.TotalSeconds, "s", "Time the engine thread spent on work");
        return meter;
    }

    /// <summary>How the engine schedules work, from the client's options.</summary>
    internal static EngineSettings ToEngineSettings(CobraModelOptions settings) => new()
    {
        MaxActive = settings.MaxConcurrentRequests,
        MaxQueued = settings.MaxQueuedRequests,
        PrefillChunkTokens = settings.PrefillChunkTokens,
        CacheEntries = settings.ConversationCacheSize,
        CacheBytes = settings.ConversationCacheBytes,
    };

    /// <summary>The engine's counters now: queue, batch, tokens, state-cache hits and misses, decode steps, busy time.</summary>
    /// <returns>A snapshot of the counters.</returns>
    public CobraEngineStatistics GetStatistics() => engine.Statistics;

    /// <summary>Tensors alive on the inference thread (diagnostics).</summary>
    internal long LiveTensorCount => engine.LiveTensorCount;

    /// <summary>Requests being decoded right now (diagnostics).</summary>
    internal int ActiveRequests => engine.ActiveCount;

    /// <summary>The distributed conversation state store, or null (tests, diagnostics).</summary>
    internal DistributedStateStore? StateStore => engine.StateStore;

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        // The streaming path aggregated; with n choices, one message per choice in index order.
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            updates.Add(update);
        }

        if (!updates.Any(u => u.AdditionalProperties?.ContainsKey(CobraAdditionalProperties.ChoiceIndex) == true))
        {
            return updates.ToChatResponse();
        }

        var byChoice = updates.Where(u => u.AdditionalProperties?.ContainsKey(CobraAdditionalProperties.ChoiceIndex) == true).GroupBy(ChoiceOf).OrderBy(g => g.Key).ToList();

        var parts = byChoice.Select(g => g.ToChatResponse()).ToList();
        var response = new ChatResponse(parts.SelectMany(p => p.Messages).ToList())
        {
            ResponseId = parts[0].ResponseId,
            ConversationId = parts[0].ConversationId,
            ModelId = parts[0].ModelId,
            CreatedAt = parts[0].CreatedAt,
            FinishReason = parts[0].FinishReason,
            Usage = updates.SelectMany(u => u.Contents).OfType<UsageContent>().LastOrDefault()?.Details,
        };
        for (int i = 0; i < parts.Count; i++)
        {
            foreach (var message in parts[i].Messages)
            {
                (message.AdditionalProperties ??= [])[CobraAdditionalProperties.ChoiceIndex] = byChoice[i].Key;
                message.AdditionalProperties["finish_reason"] = parts[i].FinishReason?.Value;
            }
        }

        return response;
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        ArgumentNullException.ThrowIfNull(messages);
        var newMessages = messages.ToList();
        string conversationId = options?.ConversationId ?? "cobra-conv-" + Guid.NewGuid().ToString("N");
        var history = options?.ConversationId is { } known ? [.. conversations.Get(known), .. newMessages] : newMessages;
        var request = await ToRequestAsync(history, options, cancellationToken).ConfigureAwait(false);

        // A consumer that stops enumerating early also stops the generation and frees its state.
        using var abandon = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var events = engine.Submit(request, abandon.Token);
        string responseId = "cobra-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        var answer = new System.Text.StringBuilder();
        ChoiceCompleted? finish = null;
        try
        {
            await foreach (var generationEvent in events.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                if (generationEvent is TextGenerated { Choice: 0 } text)
                {
                    answer.Append(text.Text);
                }
                else if (generationEvent is GenerationCompleted)
                {
                    // The conversation continues from choice 0's answer, as a caller re-sending the history would.
                    conversations.Put(conversationId, [.. history, new ChatMessage(ChatRole.Assistant, answer.ToString())]);
                }

                // One choice: its finish reason rides on the last update, with the usage.
                if (request.Choices == 1 && generationEvent is ChoiceCompleted single)
                {
                    finish = single;
                    continue;
                }

                if (ToUpdate(generationEvent, responseId, conversationId, created, request.Choices > 1) is { } update)
                {
                    if (finish is not null && generationEvent is GenerationCompleted)
                    {
                        update.FinishReason = ToFinishReason(finish.Reason);
                    }

                    yield return update;
                }
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

        meter.Dispose();
        engine.Dispose();
        http?.Dispose();
    }

    private async Task<GenerationRequest> ToRequestAsync(IEnumerable<ChatMessage> messages, ChatOptions? chatOptions, CancellationToken cancellationToken)
    {
        var prompt = ChatRequestMapper.ToCobraPrompt(messages, chatOptions, options, logger);
        prompt.Sampling.Validate();
        long characters = prompt.Turns.Sum(t => (long)t.Content.Length);
        if (characters > options.MaxPromptCharacters)
        {
            throw new ArgumentException($"The prompt has {characters} characters, over CobraModelOptions.MaxPromptCharacters = {options.MaxPromptCharacters}.", nameof(messages));
        }

        var constraint = JsonConstraints.Compile(prompt.ResponseFormat, engine.Pipeline.Tokenizer, engine.Pipeline.Model.LanguageModel.Config.PaddedVocabSize, prompt.Sampling.MaxNewTokens);
        TowerImages? image = null;
        string? imageKey = null;
        if (prompt.Image is not null)
        {
            // Only the towers' resized inputs (~0.9 MB) wait in the queue, never the decoded original.
            (var decoded, imageKey) = await images.ResolveAsync(prompt.Image, cancellationToken).ConfigureAwait(false);
            image = engine.Pipeline.ResizeForTowers(decoded);
        }

        var ids = engine.Pipeline.EncodePrompt(prompt.Turns);
        var remote = engine.StateStore is { } store ? await store.FindLongestAsync(imageKey, ids, cancellationToken).ConfigureAwait(false) : null; // [state-store]
        return new GenerationRequest(ids, image, imageKey, prompt.Sampling, prompt.StopSequences)
        {
            Remote = remote,
            Choices = prompt.Choices,
            Logprobs = prompt.Logprobs,
            TopLogprobs = prompt.TopLogprobs,
            Constraint = constraint,
        };
    }

    private static int ChoiceOf(ChatResponseUpdate update) =>
        update.AdditionalProperties?.TryGetValue(CobraAdditionalProperties.ChoiceIndex, out var index) == true && index is int i ? i : 0;

    private ChatResponseUpdate? ToUpdate(GenerationEvent generationEvent, string responseId, string conversationId, DateTimeOffset created, bool severalChoices)
    {
        var update = new ChatResponseUpdate { Role = ChatRole.Assistant, ResponseId = responseId, MessageId = responseId, ConversationId = conversationId, CreatedAt = created, ModelId = options.ModelId };
        switch (generationEvent)
        {
            case TextGenerated text:
                if (text.Text.Length > 0)
                {
                    update.Contents.Add(new TextContent(text.Text));
                }

                if (text.Logprobs is not null)
                {
                    (update.AdditionalProperties ??= [])[CobraAdditionalProperties.TokenLogprobs] = text.Logprobs;
                }

                SetChoice(update, text.Choice, severalChoices);
                return update;
            case ChoiceCompleted choice:
                update.FinishReason = ToFinishReason(choice.Reason);
                update.RawRepresentation = choice;
                SetChoice(update, choice.Choice, severalChoices);
                return update;
            case GenerationCompleted done:
                update.Contents.Add(new UsageContent(new UsageDetails
                {
                    InputTokenCount = done.InputTokens,
                    OutputTokenCount = done.OutputTokens,
                    TotalTokenCount = done.InputTokens + done.OutputTokens,
                    CachedInputTokenCount = done.CachedInputTokens,
                }));
                update.RawRepresentation = done;
                return update;
            default:
                return null;
        }
    }

    private static ChatFinishReason ToFinishReason(FinishReason reason) => reason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static void SetChoice(ChatResponseUpdate update, int choice, bool severalChoices)
    {
        if (severalChoices)
        {
            update.MessageId = $"{update.ResponseId}-{choice}";
            (update.AdditionalProperties ??= [])[CobraAdditionalProperties.ChoiceIndex] = choice;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Loaded Cobra {ModelId} on {Device} in {Precision}: {Parameters} parameters in {Seconds:F1} s")]
    private static partial void LogLoaded(ILogger logger, string modelId, string device, string precision, long parameters, double seconds);
}
