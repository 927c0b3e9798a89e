using System.Diagnostics;
using System.Net.ServerSentEvents;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Cobra.AI.Server;

/// <summary>
/// Serves <c>/v1/chat/completions</c>, <c>/v1/models</c> and <c>/health</c> over the <see cref="IChatClient"/> in DI:
/// reads and validates the typed request, admits it (the pending slot is taken only then), runs its choices and
/// answers as JSON or server-sent events, and ends running requests on shutdown after the grace period.
/// </summary>
internal sealed class ChatCompletionsHandler
{
    private readonly OpenAIServerOptions settings;
    private readonly ILogger logger;
    private readonly ServerMetrics metrics;
    private readonly OpenAIJsonContext json;
    private readonly CancellationTokenSource shutdown = new();
    private int pending;
    private int stopping;

    public ChatCompletionsHandler(OpenAIServerOptions settings, ILogger logger, IServiceProvider services)
    {
        this.settings = settings;
        this.logger = logger;
        metrics = new ServerMetrics(services.GetService<System.Diagnostics.Metrics.IMeterFactory>(), () => Volatile.Read(ref pending));

        // Plain UTF-8 (no \u escapes for '+' or non-ASCII text), as OpenAI writes it; messages counted while parsing.
        json = new OpenAIJsonContext(new JsonSerializerOptions
        {
            Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
            DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
            Converters = { new BoundedMessagesConverter(settings.MaxMessages) },
        });
    }

    /// <summary>Admitted requests queued or generating.</summary>
    public int Pending => Volatile.Read(ref pending);

    /// <summary>Host stopping: refuse new requests, give running ones the grace period, then end them.</summary>
    public void BeginShutdown()
    {
        if (Interlocked.Exchange(ref stopping, 1) != 0)
        {
            return;
        }

        ServerLog.ShuttingDown(logger, Pending, settings.ShutdownGracePeriod.TotalSeconds);
        shutdown.Token.Register(() => ServerLog.GraceOver(logger, Pending));
        shutdown.CancelAfter(settings.ShutdownGracePeriod);
    }

    public Task HealthAsync(HttpContext context)
    {
        var client = context.RequestServices.GetService<IChatClient>();
        var (status, state) = Volatile.Read(ref stopping) != 0 ? (503, "stopping")
            : client is null || client.GetService(typeof(LoadingChatClient)) is LoadingChatClient { Inner: null } ? (503, "loading")
            : (200, "ok");
        if (status != 200)
        {
            context.Response.Headers.RetryAfter = "1";
        }

        context.Response.Headers.CacheControl = "no-store";
        return TypedResults.Json(new HealthStatus(state), json.HealthStatus, statusCode: status).ExecuteAsync(context);
    }

    public Task ModelsAsync(HttpContext context)
    {
        if (!Authorized(context))
        {
            return WriteErrorAsync(context, Unauthorized());
        }

        // While the model loads, a LoadingChatClient stands for the Cobra client it will become.
        var client = context.RequestServices.GetService<IChatClient>();
        bool images = client is null || client.GetService(typeof(LoadingChatClient)) is LoadingChatClient { Inner: null } || ChoiceStreams.IsCobra(client);
        var model = new ModelInfo(settings.ModelId, "model", 0, "cobra", images ? ["text", "image"] : ["text"]);
        return TypedResults.Json(new ModelList("list", [model]), json.ModelList).ExecuteAsync(context);
    }

    public async Task HandleAsync(HttpContext context)
    {
        int status = 200;
        bool admitted = false;
        using var deadline = new CancellationTokenSource();
        try
        {
            if (Volatile.Read(ref stopping) != 0)
            {
                throw ShuttingDown();
            }

            if (!Authorized(context))
            {
                throw Unauthorized();
            }

            var client = context.RequestServices.GetService<IChatClient>() ?? throw new ModelNotReadyException();
            var wire = await ReadBodyAsync(context).ConfigureAwait(false);
            bool cobra = ChoiceStreams.IsCobra(client);
            var request = OpenAIRequestMapper.ToChatRequest(wire, settings, cobra);
            if (Interlocked.Increment(ref pending) > settings.MaxPendingRequests)
            {
                Interlocked.Decrement(ref pending);
                throw new OpenAIErrorException(429, $"Too many requests in flight (more than {settings.MaxPendingRequests}); retry shortly.", type: "rate_limit_exceeded", code: "rate_limit_exceeded");
            }

            admitted = true;
            var clock = Stopwatch.StartNew();
            deadline.CancelAfter(settings.RequestTimeout);
            using var generation = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, shutdown.Token, deadline.Token);
            var updates = ChoiceStreams.Generate(client, request, cobra, generation.Token).GetAsyncEnumerator(generation.Token);
            await using (updates.ConfigureAwait(false))
            {
                // Pull the first update before answering, so the client's validation errors still get their status.
                bool any = await updates.MoveNextAsync().ConfigureAwait(false);
                var answer = new Answer(request, "chatcmpl-" + Guid.NewGuid().ToString("N"), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), settings.ModelId, clock, metrics);
                if (request.Stream)
                {
                    await TypedResults.ServerSentEvents(StreamAsync(context, answer, updates, any, deadline)).ExecuteAsync(context).ConfigureAwait(false);
                }
                else
                {
                    while (any)
                    {
                        answer.Add(updates.Current);
                        any = await updates.MoveNextAsync().ConfigureAwait(false);
                    }

                    await TypedResults.Json(answer.ToCompletion(), json.ChatCompletion).ExecuteAsync(context).ConfigureAwait(false);
                }

                answer.RecordUsage();
            }
        }
        catch (Exception) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; its generation was cancelled with it.
            status = 499;
            ServerLog.ClientGone(logger);
        }
        catch (OperationCanceledException) when (!context.Response.HasStarted && deadline.IsCancellationRequested && !shutdown.IsCancellationRequested)
        {
            var error = DeadlineExceeded();
            status = error.Status;
            await WriteErrorAsync(context, error).ConfigureAwait(false);
        }
        catch (Exception e) when (!context.Response.HasStarted)
        {
            var error = Translate(e);
            status = error.Status;
            await WriteErrorAsync(context, error).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            status = 500;
            ServerLog.StreamFailed(logger, e);
        }
        finally
        {
            if (admitted)
            {
                Interlocked.Decrement(ref pending);
            }

            metrics.Request(status);
        }
    }

    /// <summary>The event stream: a role chunk per choice, the deltas, the finish chunks, usage, <c>[DONE]</c>; a failure mid-stream becomes an error event.</summary>
    private async IAsyncEnumerable<SseItem<string>> StreamAsync(HttpContext context, Answer answer, IAsyncEnumerator<ChoiceUpdate> updates, bool any, CancellationTokenSource deadline)
    {
        for (int i = 0; i < answer.Request.Choices; i++)
        {
            yield return Event(answer.Chunk(new ChunkChoice(i, new ChunkDelta("assistant", ""), null, null)));
        }

        OpenAIErrorException? failure = null;
        while (any)
        {
            foreach (var chunk in answer.Add(updates.Current))
            {
                yield return Event(chunk);
            }

            try
            {
                any = await updates.MoveNextAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (!context.RequestAborted.IsCancellationRequested)
            {
                failure = e is OperationCanceledException && deadline.IsCancellationRequested && !shutdown.IsCancellationRequested ? DeadlineExceeded() : Translate(e);
                any = false;
            }
        }

        if (failure is not null)
        {
            yield return new SseItem<string>(JsonSerializer.Serialize(ToError(failure), json.ErrorResponse));
        }
        else if (answer.Request.IncludeUsage)
        {
            yield return Event(answer.UsageChunk());
        }

        yield return new SseItem<string>("[DONE]");
    }

    private SseItem<string> Event(ChatCompletionChunk chunk) => new(JsonSerializer.Serialize(chunk, json.ChatCompletionChunk));

    private bool Authorized(HttpContext context) =>
        settings.ApiKey is null
        || string.Equals(context.Request.Headers.Authorization.ToString(), "Bearer " + settings.ApiKey, StringComparison.Ordinal);

    private static OpenAIErrorException Unauthorized() => new(401, "Incorrect or missing API key.", code: "invalid_api_key");

    private OpenAIErrorException DeadlineExceeded() =>
        new(504, $"The request ran past this server's limit of {settings.RequestTimeout.TotalSeconds:0.#} s (OpenAIServerOptions.RequestTimeout) and was stopped.", type: "server_error", code: "request_timeout");

    private static OpenAIErrorException ShuttingDown() => new(503, "The server is shutting down; retry on another instance or later.", type: "server_error", code: "server_shutting_down");

    private async Task<ChatCompletionRequest> ReadBodyAsync(HttpContext context)
    {
        var limit = context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } feature ? feature : null;
        if (context.Request.ContentLength > settings.MaxRequestBytes)
        {
            // Unread, the body is drained by Kestrel (for a few seconds at most) once the 413 is sent, so the client
            // reads the answer instead of a connection reset; a size limit here would make the drain abort.
            limit?.MaxRequestBodySize = null;
            throw TooLarge();
        }

        limit?.MaxRequestBodySize = settings.MaxRequestBytes;

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        timeout.CancelAfter(settings.BodyReadTimeout);
        try
        {
            return await JsonSerializer.DeserializeAsync(context.Request.Body, json.ChatCompletionRequest, timeout.Token).ConfigureAwait(false)
                ?? throw new OpenAIErrorException(400, "The request body must be a JSON object.");
        }
        catch (OperationCanceledException) when (!context.RequestAborted.IsCancellationRequested)
        {
            throw new OpenAIErrorException(408, $"The request body was not received within {settings.BodyReadTimeout.TotalSeconds:0.#} s.", code: "request_timeout");
        }
        catch (BadHttpRequestException e)
        {
            throw e.StatusCode == StatusCodes.Status413PayloadTooLarge ? TooLarge() : new OpenAIErrorException(e.StatusCode, "The request body could not be read.");
        }
        catch (JsonException e)
        {
            throw FromJson(e);
        }
    }

    private OpenAIErrorException TooLarge() => new(413, $"The request body exceeds {settings.MaxRequestBytes} bytes (OpenAIServerOptions.MaxRequestBytes).", code: "request_too_large");

    private static OpenAIErrorException FromJson(JsonException e)
    {
        string where = $"line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}";
        string? field = e.Path switch
        {
            null or "$" => null,
            string p when p.StartsWith("$.", StringComparison.Ordinal) => p[2..],
            string p => p[1..],
        };
        return field is null
            ? new OpenAIErrorException(400, $"The request body is not a valid JSON object ({where}).")
            : new OpenAIErrorException(400, $"'{field}' has a value of the wrong type or is not valid JSON ({where}).", field);
    }

    /// <summary>Maps what the chat client threw to an OpenAI error; anything unexpected is logged and answered without details.</summary>
    private OpenAIErrorException Translate(Exception e)
    {
        var error = e switch
        {
            OpenAIErrorException known => known,
            ChannelClosedException { InnerException: { } inner } => Translate(inner),
            ModelNotReadyException notReady => new OpenAIErrorException(503, notReady.Message, type: "server_error", code: "model_loading"),
            CobraQueueFullException full => new OpenAIErrorException(429, full.Message, type: "rate_limit_exceeded", code: "queue_full"),
            CobraImageLimitException image => new OpenAIErrorException(413, image.Message, "messages", code: "image_too_large"),
            CobraConversationNotFoundException missing => new OpenAIErrorException(404, missing.Message, code: "conversation_not_found"),

            OperationCanceledException when shutdown.IsCancellationRequested => ShuttingDown(),
            ObjectDisposedException => ShuttingDown(),
            InvalidDataException or ArgumentException or NotSupportedException or FileNotFoundException or UnauthorizedAccessException
                => new OpenAIErrorException(400, e.Message),
            TimeoutException when e.Message.StartsWith("Remote image", StringComparison.Ordinal) => new OpenAIErrorException(400, e.Message, "messages"),
            _ => null,
        };
        if (error is null)
        {
            ServerLog.Failed(logger, e);
            return new OpenAIErrorException(500, "The server failed to answer; the error was logged.", type: "server_error");
        }

        ServerLog.Refused(logger, error.Status, error.Param, error.Message);
        return error;
    }

    private static ErrorResponse ToError(OpenAIErrorException error) => new(new ErrorBody(error.Message, error.Type, error.Param, error.Code));

    private Task WriteErrorAsync(HttpContext context, OpenAIErrorException error)
    {
        if (error.Status is 429 or 503)
        {
            context.Response.Headers.RetryAfter = "1";
        }

        return TypedResults.Json(ToError(error), json.ErrorResponse, statusCode: error.Status).ExecuteAsync(context);
    }

    /// <summary>The choices of one answer as they build up, and their wire shapes.</summary>
    private sealed class Answer(ChatRequest request, string id, long created, string model, Stopwatch clock, ServerMetrics metrics)
    {
        private readonly StringBuilder[] texts = [.. Enumerable.Range(0, request.Choices).Select(_ => new StringBuilder())];
        private readonly List<TokenLogprob>?[] logprobs = new List<TokenLogprob>?[request.Choices];
        private readonly string?[] finishes = new string?[request.Choices];
        private readonly UsageDetails?[] usages = new UsageDetails?[request.Choices];
        private bool firstToken;

        public ChatRequest Request => request;

        /// <summary>Takes one update in; returns the chunks it makes.</summary>
        public List<ChatCompletionChunk> Add(ChoiceUpdate item)
        {
            var (index, update) = item;
            var chunks = new List<ChatCompletionChunk>(2);
            foreach (var usage in update.Contents.OfType<UsageContent>())
            {
                usages[index] = usage.Details;
            }

            string text = update.Text;
            var tokens = request.Logprobs ? ToLogprobs(update) : null;
            if (text.Length > 0 || tokens is { Count: > 0 })
            {
                if (!firstToken)
                {
                    firstToken = true;
                    metrics.FirstToken(clock.Elapsed);
                }

                texts[index].Append(text);
                if (tokens is not null)
                {
                    (logprobs[index] ??= []).AddRange(tokens);
                }

                chunks.Add(Chunk(new ChunkChoice(index, new ChunkDelta(null, text), tokens is null ? null : new ChoiceLogprobs(tokens, null), null)));
            }

            if (update.FinishReason is { } reason)
            {
                finishes[index] = ToFinishReason(reason);
                chunks.Add(Chunk(new ChunkChoice(index, new ChunkDelta(null, null), null, finishes[index])));
            }

            return chunks;
        }

        public ChatCompletionChunk Chunk(ChunkChoice choice) => new(id, "chat.completion.chunk", created, model, [choice], null);

        public ChatCompletionChunk UsageChunk() => new(id, "chat.completion.chunk", created, model, [], Usage());

        public ChatCompletion ToCompletion() => new(
            id,
            "chat.completion",
            created,
            model,
            [.. Enumerable.Range(0, request.Choices).Select(i => new CompletionChoice(
                i,
                new AssistantMessage("assistant", texts[i].ToString(), null),
                request.Logprobs ? new ChoiceLogprobs(logprobs[i] ?? [], null) : null,
                finishes[i] ?? "stop"))],
            Usage());

        public void RecordUsage()
        {
            var usage = Usage();
            metrics.Tokens(usage.PromptTokens, usage.CompletionTokens, usage.PromptTokensDetails.CachedTokens);
        }

        /// <summary>One prompt for all choices (Cobra reports one usage for all; fanned-out calls each count it): the largest input, the summed output.</summary>
        private CompletionUsage Usage()
        {
            long input = usages.Max(u => u?.InputTokenCount ?? 0);
            long output = usages.Sum(u => u?.OutputTokenCount ?? 0);
            long cached = usages.Max(u => u?.CachedInputTokenCount ?? 0);
            return new CompletionUsage(input, output, input + output, new PromptTokensDetails(cached));
        }

        private static List<TokenLogprob>? ToLogprobs(ChatResponseUpdate update) =>
            update.AdditionalProperties?.TryGetValue(CobraAdditionalProperties.TokenLogprobs, out object? value) == true && value is IReadOnlyList<CobraTokenLogprob> tokens
                ? [.. tokens.Select(t => new TokenLogprob(t.Token, t.Logprob, Bytes(t.Bytes), [.. t.TopLogprobs.Select(a => new TopLogprob(a.Token, a.Logprob, Bytes(a.Bytes)))]))]
                : null;

        private static int[] Bytes(byte[] bytes) => [.. bytes.Select(b => (int)b)];

        private static string ToFinishReason(ChatFinishReason reason) =>
            reason == ChatFinishReason.Length ? "length"
            : reason == ChatFinishReason.ContentFilter ? "content_filter"
            : reason == ChatFinishReason.ToolCalls ? "tool_calls"
            : "stop";
    }
}
