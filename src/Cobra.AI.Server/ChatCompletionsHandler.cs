using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace Cobra.AI.Server;

/// <summary>A request the handler rejects, with its HTTP status and OpenAI error type.</summary>
internal sealed class OpenAIErrorException(int status, string message, string type = "invalid_request_error", string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;

    public string Type { get; } = type;

    public string? Param { get; } = param;

    public string? Code { get; } = code;
}

/// <summary>Translates OpenAI chat completion requests to <see cref="IChatClient"/> calls and back.</summary>
internal sealed class ChatCompletionsHandler(OpenAIServerOptions options)
{
    /// <summary>Plain UTF-8 in the JSON (no \u escapes for '+' or non-ASCII text), as OpenAI writes it.</summary>
    private static readonly JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private int pending;

    public async Task ModelsAsync(HttpContext context)
    {
        if (!Authorized(context))
        {
            await WriteErrorAsync(context, new OpenAIErrorException(401, "Incorrect or missing API key.", "invalid_request_error", code: "invalid_api_key")).ConfigureAwait(false);
            return;
        }

        var body = new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject { ["id"] = options.ModelId, ["object"] = "model", ["created"] = 0, ["owned_by"] = "cobra" }),
        };
        await WriteJsonAsync(context, 200, body).ConfigureAwait(false);
    }

    public async Task HandleAsync(HttpContext context)
    {
        bool counted = false;
        try
        {
            if (!Authorized(context))
            {
                throw new OpenAIErrorException(401, "Incorrect or missing API key.", code: "invalid_api_key");
            }

            var client = context.RequestServices.GetService<IChatClient>()
                ?? throw new OpenAIErrorException(503, "The model is still loading; try again shortly.", "server_error");
            if (Interlocked.Increment(ref pending) > options.MaxPendingRequests)
            {
                Interlocked.Decrement(ref pending);
                context.Response.Headers.RetryAfter = "1";
                throw new OpenAIErrorException(429, $"Too many requests in flight (more than {options.MaxPendingRequests}); retry shortly.", "rate_limit_exceeded");
            }

            counted = true;
            var request = await ReadBodyAsync(context).ConfigureAwait(false);
            var (messages, chatOptions, stream, includeUsage) = ToChatRequest(request);
            string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            if (stream)
            {
                await StreamAsync(context, client, messages, chatOptions, includeUsage, id, created).ConfigureAwait(false);
            }
            else
            {
                var response = await client.GetResponseAsync(messages, chatOptions, context.RequestAborted).ConfigureAwait(false);
                await WriteJsonAsync(context, 200, ToCompletion(response, id, created)).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; its generation was cancelled with it.
        }
        catch (Exception e) when (!context.Response.HasStarted)
        {
            var error = Translate(e);
            if (error.Status is 503 or 429)
            {
                context.Response.Headers.RetryAfter = "1";
            }

            await WriteErrorAsync(context, error).ConfigureAwait(false);
        }
        finally
        {
            if (counted)
            {
                Interlocked.Decrement(ref pending);
            }
        }
    }

    private bool Authorized(HttpContext context) =>
        string.IsNullOrEmpty(options.ApiKey)
        || string.Equals(context.Request.Headers.Authorization.ToString(), "Bearer " + options.ApiKey, StringComparison.Ordinal);

    private async Task<JsonObject> ReadBodyAsync(HttpContext context)
    {
        if (context.Request.ContentLength > options.MaxRequestBytes)
        {
            throw new OpenAIErrorException(413, $"The request body exceeds {options.MaxRequestBytes} bytes.");
        }

        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await context.Request.Body.ReadAsync(chunk, context.RequestAborted).ConfigureAwait(false)) > 0)
        {
            buffer.Write(chunk, 0, read);
            if (buffer.Length > options.MaxRequestBytes)
            {
                throw new OpenAIErrorException(413, $"The request body exceeds {options.MaxRequestBytes} bytes.");
            }
        }

        try
        {
            return JsonNode.Parse(buffer.ToArray()) as JsonObject ?? throw new OpenAIErrorException(400, "The request body must be a JSON object.");
        }
        catch (JsonException e)
        {
            throw new OpenAIErrorException(400, $"The request body is not valid JSON: {e.Message}");
        }
    }

    private (List<ChatMessage> Messages, ChatOptions Options, bool Stream, bool IncludeUsage) ToChatRequest(JsonObject request)
    {
        if (request["model"] is JsonValue model && model.TryGetValue(out string? modelId) && !string.IsNullOrEmpty(modelId) && modelId != options.ModelId)
        {
            throw new OpenAIErrorException(404, $"The model '{modelId}' does not exist; this server serves '{options.ModelId}'.", param: "model", code: "model_not_found");
        }

        if (request["messages"] is not JsonArray array || array.Count == 0)
        {
            throw new OpenAIErrorException(400, "'messages' must be a non-empty array.", param: "messages");
        }

        var messages = array.Select((m, i) => ToMessage(m, i)).OfType<ChatMessage>().ToList();
        var chatOptions = new ChatOptions
        {
            Temperature = Float(request, "temperature", 0, 2),
            TopP = Float(request, "top_p", 0, 1),
            MaxOutputTokens = Int(request, "max_completion_tokens") ?? Int(request, "max_tokens"),
            Seed = request["seed"] is JsonValue seed && seed.TryGetValue(out long s) ? s : null,
            FrequencyPenalty = Float(request, "frequency_penalty", -2, 2),
            PresencePenalty = Float(request, "presence_penalty", -2, 2),
            StopSequences = request["stop"] switch
            {
                null => null,
                JsonValue one when one.TryGetValue(out string? text) => [text],
                JsonArray many => many.Select(x => x is JsonValue v && v.TryGetValue(out string? t) ? t : throw new OpenAIErrorException(400, "'stop' must be a string or an array of strings.", param: "stop")).ToList(),
                _ => throw new OpenAIErrorException(400, "'stop' must be a string or an array of strings.", param: "stop"),
            },
        };
        if (Int(request, "n") is int n && n != 1)
        {
            throw new OpenAIErrorException(400, "Only n = 1 is supported.", param: "n");
        }

        bool stream = request["stream"] is JsonValue st && st.TryGetValue(out bool b) && b;
        bool includeUsage = request["stream_options"]?["include_usage"] is JsonValue u && u.TryGetValue(out bool iu) && iu;
        return (messages, chatOptions, stream, includeUsage);
    }

    private ChatMessage? ToMessage(JsonNode? node, int index)
    {
        string role = node?["role"] is JsonValue r && r.TryGetValue(out string? rs) ? rs : throw new OpenAIErrorException(400, $"messages[{index}].role is missing.", param: "messages");
        var chatRole = role switch
        {
            "user" => ChatRole.User,
            "assistant" => ChatRole.Assistant,
            "system" or "developer" => ChatRole.System,
            "tool" or "function" => (ChatRole?)null,
            _ => throw new OpenAIErrorException(400, $"messages[{index}].role '{role}' is not valid.", param: "messages"),
        };
        if (chatRole is null)
        {
            return null;
        }

        var contents = new List<AIContent>();
        switch (node!["content"])
        {
            case null:
                break;
            case JsonValue text when text.TryGetValue(out string? s):
                contents.Add(new TextContent(s));
                break;
            case JsonArray parts:
                foreach (var part in parts)
                {
                    contents.Add(ToContent(part, index));
                }

                break;
            default:
                throw new OpenAIErrorException(400, $"messages[{index}].content must be a string or an array of parts.", param: "messages");
        }

        return new ChatMessage(chatRole.Value, contents);
    }

    private AIContent ToContent(JsonNode? part, int index)
    {
        string? type = part?["type"] is JsonValue t && t.TryGetValue(out string? ts) ? ts : null;
        switch (type)
        {
            case "text":
                return new TextContent(part!["text"] is JsonValue v && v.TryGetValue(out string? text) ? text : throw new OpenAIErrorException(400, $"messages[{index}]: a text part needs 'text'.", param: "messages"));
            case "image_url":
                string url = part!["image_url"]?["url"] is JsonValue u && u.TryGetValue(out string? us) ? us
                    : part["image_url"] is JsonValue direct && direct.TryGetValue(out string? ds) ? ds
                    : throw new OpenAIErrorException(400, $"messages[{index}]: an image_url part needs 'image_url.url'.", param: "messages");
                if (url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
                {
                    try
                    {
                        return new DataContent(url);
                    }
                    catch (Exception e) when (e is ArgumentException or FormatException or UriFormatException)
                    {
                        throw new OpenAIErrorException(400, $"messages[{index}]: the image data URL is malformed ({e.Message}).", param: "messages");
                    }
                }

                if (options.AllowRemoteImages && Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https")
                {
                    return new UriContent(uri, "image/*");
                }

                throw new OpenAIErrorException(400, $"messages[{index}]: image URLs must be data: URLs" + (options.AllowRemoteImages ? " or http(s) URLs." : " (remote images are disabled on this server)."), param: "messages");
            default:
                throw new OpenAIErrorException(400, $"messages[{index}]: content part type '{type}' is not supported (text, image_url).", param: "messages");
        }
    }

    private async Task StreamAsync(HttpContext context, IChatClient client, List<ChatMessage> messages, ChatOptions chatOptions, bool includeUsage, string id, long created)
    {
        var response = context.Response;
        bool started = false;
        UsageDetails? usage = null;
        await foreach (var update in client.GetStreamingResponseAsync(messages, chatOptions, context.RequestAborted).ConfigureAwait(false))
        {
            if (!started)
            {
                response.StatusCode = 200;
                response.ContentType = "text/event-stream";
                response.Headers.CacheControl = "no-cache";
                await WriteEventAsync(context, Chunk(id, created, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null)).ConfigureAwait(false);
                started = true;
            }

            usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
            if (update.Text.Length > 0)
            {
                await WriteEventAsync(context, Chunk(id, created, new JsonObject { ["content"] = update.Text }, null)).ConfigureAwait(false);
            }

            if (update.FinishReason is { } finish)
            {
                await WriteEventAsync(context, Chunk(id, created, new JsonObject(), FinishReason(finish))).ConfigureAwait(false);
            }
        }

        if (includeUsage)
        {
            var last = Chunk(id, created, null, null);
            last["choices"] = new JsonArray();
            last["usage"] = Usage(usage);
            await WriteEventAsync(context, last).ConfigureAwait(false);
        }

        await context.Response.WriteAsync("data: [DONE]\n\n", context.RequestAborted).ConfigureAwait(false);
    }

    private JsonObject Chunk(string id, long created, JsonObject? delta, string? finishReason) => new()
    {
        ["id"] = id,
        ["object"] = "chat.completion.chunk",
        ["created"] = created,
        ["model"] = options.ModelId,
        ["choices"] = delta is null ? null : new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["finish_reason"] = finishReason }),
    };

    private JsonObject ToCompletion(ChatResponse response, string id, long created) => new()
    {
        ["id"] = id,
        ["object"] = "chat.completion",
        ["created"] = created,
        ["model"] = options.ModelId,
        ["choices"] = new JsonArray(new JsonObject
        {
            ["index"] = 0,
            ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = response.Text },
            ["finish_reason"] = FinishReason(response.FinishReason ?? ChatFinishReason.Stop),
        }),
        ["usage"] = Usage(response.Usage),
    };

    private static string FinishReason(ChatFinishReason reason) => reason == ChatFinishReason.Length ? "length" : "stop";

    private static JsonObject Usage(UsageDetails? usage) => new()
    {
        ["prompt_tokens"] = usage?.InputTokenCount ?? 0,
        ["completion_tokens"] = usage?.OutputTokenCount ?? 0,
        ["total_tokens"] = usage?.TotalTokenCount ?? 0,
        ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = usage?.CachedInputTokenCount ?? 0 },
    };

    private static OpenAIErrorException Translate(Exception e) => e switch
    {
        OpenAIErrorException known => known,
        ModelNotReadyException notReady => new OpenAIErrorException(503, notReady.Message, "server_error"),
        InvalidDataException bad when bad.Message.Contains("MaxImageBytes", StringComparison.Ordinal) || bad.Message.Contains("MaxImagePixels", StringComparison.Ordinal)
            => new OpenAIErrorException(413, bad.Message),
        InvalidDataException or ArgumentException or UnauthorizedAccessException or NotSupportedException or FileNotFoundException => new OpenAIErrorException(400, e.Message),
        ObjectDisposedException => new OpenAIErrorException(503, "The model is shutting down.", "server_error"),
        _ => new OpenAIErrorException(500, "The server failed to answer: " + e.Message, "server_error"),
    };

    private static float? Float(JsonObject request, string name, double min, double max)
    {
        if (request[name] is null)
        {
            return null;
        }

        return request[name] is JsonValue v && v.TryGetValue(out double d) && d >= min && d <= max
            ? (float)d
            : throw new OpenAIErrorException(400, $"'{name}' must be a number in [{min}, {max}].", param: name);
    }

    private static int? Int(JsonObject request, string name)
    {
        if (request[name] is null)
        {
            return null;
        }

        return request[name] is JsonValue v && v.TryGetValue(out int i) && i > 0
            ? i
            : throw new OpenAIErrorException(400, $"'{name}' must be a positive integer.", param: name);
    }

    private static async Task WriteEventAsync(HttpContext context, JsonObject body)
    {
        await context.Response.WriteAsync("data: " + body.ToJsonString(Json) + "\n\n", context.RequestAborted).ConfigureAwait(false);
        await context.Response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private static async Task WriteJsonAsync(HttpContext context, int status, JsonObject body)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(body.ToJsonString(Json), Encoding.UTF8, context.RequestAborted).ConfigureAwait(false);
    }

    private static Task WriteErrorAsync(HttpContext context, OpenAIErrorException error) =>
        WriteJsonAsync(context, error.Status, new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = error.Message, ["type"] = error.Type, ["param"] = error.Param, ["code"] = error.Code },
        });
}
