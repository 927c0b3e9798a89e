using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Server;

/// <summary>A request the server refuses, with its HTTP status and OpenAI error type; the message names the field.</summary>
internal sealed class OpenAIErrorException(int status, string message, string? param = null, string type = "invalid_request_error", string? code = null) : Exception(message)
{
    public int Status { get; } = status;

    public string Type { get; } = type;

    public string? Param { get; } = param;

    public string? Code { get; } = code;

    public static OpenAIErrorException BadRequest(string param, string message) => new(400, message, param);
}

/// <summary>A validated chat completion request, ready for <see cref="IChatClient"/>.</summary>
/// <param name="Messages">The conversation.</param>
/// <param name="Options">Per-choice options (seeds are offset per choice when the client cannot fork).</param>
/// <param name="Choices">Number of choices (<c>n</c>).</param>
/// <param name="Stream">Answer as server-sent events.</param>
/// <param name="IncludeUsage">Streaming: send a final usage chunk.</param>
/// <param name="Logprobs">Return token log-probabilities.</param>
internal sealed record ChatRequest(List<ChatMessage> Messages, ChatOptions Options, int Choices, bool Stream, bool IncludeUsage, bool Logprobs);

/// <summary>Maps the typed OpenAI request onto Microsoft.Extensions.AI, refusing every field it cannot honour.</summary>
internal static class OpenAIRequestMapper
{
    private const int MaxTopLogprobs = 20;

    public static ChatRequest ToChatRequest(ChatCompletionRequest request, OpenAIServerOptions settings, bool cobra)
    {
        RefuseUnknown(request.Unknown, "");
        if (!string.IsNullOrEmpty(request.Model) && request.Model != settings.ModelId)
        {
            throw new OpenAIErrorException(404, $"The model '{request.Model}' does not exist; this server serves '{settings.ModelId}'.", "model", code: "model_not_found");
        }

        if (request.Messages is not { Count: > 0 } wire)
        {
            throw OpenAIErrorException.BadRequest("messages", "'messages' must be a non-empty array.");
        }

        var messages = new List<ChatMessage>(wire.Count);
        for (int i = 0; i < wire.Count; i++)
        {
            messages.Add(ToMessage(wire[i], i, settings));
        }

        int choices = request.N ?? 1;
        if (choices < 1 || choices > settings.MaxChoices)
        {
            throw OpenAIErrorException.BadRequest("n", $"'n' must be an integer in [1, {settings.MaxChoices}], not {choices}.");
        }

        var options = new ChatOptions
        {
            Temperature = Range(request.Temperature, "temperature", 0, 2),
            TopP = Range(request.TopP, "top_p", 0, 1),
            FrequencyPenalty = Range(request.FrequencyPenalty, "frequency_penalty", -2, 2),
            PresencePenalty = Range(request.PresencePenalty, "presence_penalty", -2, 2),
            MaxOutputTokens = MaxTokens(request, settings),
            Seed = request.Seed,
            StopSequences = ToStopSequences(request.Stop, settings),
            ResponseFormat = ToResponseFormat(request.ResponseFormat),
        };

        if (request.RepetitionPenalty is { } penalty)
        {
            RequireCobra(cobra, "repetition_penalty");
            _ = Range(penalty, "repetition_penalty", 0.01, 10);
            (options.AdditionalProperties ??= new())[CobraAdditionalProperties.RepetitionPenalty] = penalty;
        }

        if (choices > 1 && cobra)
        {
            (options.AdditionalProperties ??= new())[CobraAdditionalProperties.ChoiceCount] = choices;
        }

        bool logprobs = request.Logprobs ?? false;
        if (request.TopLogprobs is { } top)
        {
            if (top < 0 || top > MaxTopLogprobs)
            {
                throw OpenAIErrorException.BadRequest("top_logprobs", $"'top_logprobs' must be an integer in [0, {MaxTopLogprobs}], not {top}.");
            }

            if (!logprobs)
            {
                throw OpenAIErrorException.BadRequest("top_logprobs", "'top_logprobs' requires 'logprobs': true.");
            }
        }

        if (logprobs)
        {
            RequireCobra(cobra, "logprobs");
            (options.AdditionalProperties ??= new())[CobraAdditionalProperties.Logprobs] = true;
            options.AdditionalProperties[CobraAdditionalProperties.TopLogprobs] = request.TopLogprobs ?? 0;
        }

        ApplyTools(request, options, cobra);
        if (request.Modalities is { } modalities && modalities.Any(m => m != "text"))
        {
            throw OpenAIErrorException.BadRequest("modalities", $"'modalities' may only contain \"text\"; this server cannot produce {string.Join(", ", modalities.Where(m => m != "text").Select(m => $"\"{m}\""))}.");
        }

        if (request.StreamOptions is { } streamOptions)
        {
            RefuseUnknown(streamOptions.Unknown, "stream_options.");
        }

        return new ChatRequest(messages, options, choices, request.Stream ?? false, request.StreamOptions?.IncludeUsage ?? false, logprobs);
    }

    /// <summary>A JSON string's value; a lone UTF-16 surrogate escape (<c>\ud800</c>) is a client error, not a crash.</summary>
    private static string Text(JsonElement element, string at)
    {
        try
        {
            return element.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw OpenAIErrorException.BadRequest(at, $"'{at}' is not valid UTF-16 text (it holds a lone surrogate escape).");
        }
    }

    private static void RequireCobra(bool cobra, string param)
    {
        if (!cobra)
        {
            throw OpenAIErrorException.BadRequest(param, $"'{param}' is not supported by the chat client this server runs.");
        }
    }

    /// <summary>Null-valued unknown fields are tolerated (clients send explicit nulls for defaults); others are refused by name.</summary>
    private static void RefuseUnknown(Dictionary<string, JsonElement>? unknown, string prefix)
    {
        foreach (var (name, value) in unknown ?? [])
        {
            if (value.ValueKind != JsonValueKind.Null)
            {
                throw OpenAIErrorException.BadRequest(prefix + name, $"'{prefix}{name}' is not supported by this server.");
            }
        }
    }

    private static float? Range(double? value, string name, double min, double max) => value switch
    {
        null => null,
        double d when d >= min && d <= max => (float)d,
        double d => throw OpenAIErrorException.BadRequest(name, $"'{name}' must be a number in [{min}, {max}], not {d}."),
    };

    private static int? MaxTokens(ChatCompletionRequest request, OpenAIServerOptions settings)
    {
        (int? value, string name) = request.MaxCompletionTokens is not null ? (request.MaxCompletionTokens, "max_completion_tokens") : (request.MaxTokens, "max_tokens");
        if (value is { } tokens && (tokens < 1 || tokens > settings.MaxOutputTokens))
        {
            throw OpenAIErrorException.BadRequest(name, $"'{name}' must be an integer in [1, {settings.MaxOutputTokens}] (this server's limit), not {tokens}.");
        }

        return value;
    }

    private static List<string>? ToStopSequences(JsonElement? stop, OpenAIServerOptions settings)
    {
        const string Shape = "'stop' must be a string, an array of strings, or null.";
        if (stop is not { ValueKind: not JsonValueKind.Null } element)
        {
            return null;
        }

        List<string> result = element.ValueKind switch
        {
            JsonValueKind.String => [Text(element, "stop")],
            JsonValueKind.Array when element.GetArrayLength() <= settings.MaxStopSequences =>
                element.EnumerateArray().Select(s => s.ValueKind == JsonValueKind.String ? Text(s, "stop") : throw OpenAIErrorException.BadRequest("stop", Shape)).ToList(),
            JsonValueKind.Array => throw OpenAIErrorException.BadRequest("stop", $"'stop' may hold at most {settings.MaxStopSequences} strings, not {element.GetArrayLength()}."),
            _ => throw OpenAIErrorException.BadRequest("stop", Shape),
        };
        foreach (string s in result)
        {
            if (s.Length == 0 || s.Length > settings.MaxStopSequenceLength)
            {
                throw OpenAIErrorException.BadRequest("stop", $"Each 'stop' string must have 1 to {settings.MaxStopSequenceLength} characters, not {s.Length}.");
            }
        }

        return result.Count == 0 ? null : result;
    }

    private static ChatResponseFormat? ToResponseFormat(ResponseFormat? format)
    {
        if (format is null)
        {
            return null;
        }

        RefuseUnknown(format.Unknown, "response_format.");
        if (format.Type != "json_schema" && format.JsonSchema is not null)
        {
            throw OpenAIErrorException.BadRequest("response_format.json_schema", "'response_format.json_schema' is only allowed with 'response_format.type': \"json_schema\".");
        }

        switch (format.Type)
        {
            case "text":
                return ChatResponseFormat.Text;
            case "json_object":
                return ChatResponseFormat.Json;
            case "json_schema":
                var schema = format.JsonSchema ?? throw OpenAIErrorException.BadRequest("response_format.json_schema", "'response_format.json_schema' is required with type \"json_schema\".");
                RefuseUnknown(schema.Unknown, "response_format.json_schema.");
                if (schema.Schema is not { ValueKind: JsonValueKind.Object } element)
                {
                    throw OpenAIErrorException.BadRequest("response_format.json_schema.schema", "'response_format.json_schema.schema' must be a JSON Schema object.");
                }

                // strict: true and false both get the schema enforced: Cobra's constrained decoding always applies it.
                return ChatResponseFormat.ForJsonSchema(element.Clone(), schema.Name, schema.Description);
            case null:
                throw OpenAIErrorException.BadRequest("response_format.type", "'response_format.type' is required: \"text\", \"json_object\" or \"json_schema\".");
            default:
                throw OpenAIErrorException.BadRequest("response_format.type", $"'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", not \"{format.Type}\".");
        }
    }

    private static void ApplyTools(ChatCompletionRequest request, ChatOptions options, bool cobra)
    {
        string? choice = request.ToolChoice switch
        {
            null or { ValueKind: JsonValueKind.Null } => null,
            { ValueKind: JsonValueKind.String } s => Text(s, "tool_choice"),
            _ => throw OpenAIErrorException.BadRequest("tool_choice", "'tool_choice' naming a function is not supported: this model cannot call tools."),
        };
        if (choice is not (null or "none" or "auto"))
        {
            throw OpenAIErrorException.BadRequest("tool_choice", choice == "required"
                ? "'tool_choice': \"required\" is not supported: this model cannot call tools."
                : $"'tool_choice' must be \"none\", \"auto\" or \"required\", not \"{choice}\".");
        }

        if (request.Tools is not { ValueKind: not JsonValueKind.Null } tools)
        {
            return;
        }

        if (tools.ValueKind != JsonValueKind.Array)
        {
            throw OpenAIErrorException.BadRequest("tools", "'tools' must be an array of function tools.");
        }

        if (tools.GetArrayLength() == 0 || choice == "none")
        {
            return;
        }

        // Only Cobra gets the declarations: it documents and logs that it cannot call them. Another client might
        // answer with tool calls, which this server does not relay.
        RequireCobra(cobra, "tools");
        var declared = new List<AITool>();
        int index = 0;
        foreach (var tool in tools.EnumerateArray())
        {
            string at = $"tools[{index++}]";
            if (tool.ValueKind != JsonValueKind.Object || !tool.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || Text(type, "tools") != "function"
                || !tool.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
            {
                throw OpenAIErrorException.BadRequest(at, $"'{at}' must be {{\"type\": \"function\", \"function\": {{...}}}}.");
            }

            if (!function.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(Text(name, at + ".function.name")))
            {
                throw OpenAIErrorException.BadRequest(at + ".function.name", $"'{at}.function.name' must be a non-empty string.");
            }

            string? description = function.TryGetProperty("description", out var d) && d.ValueKind == JsonValueKind.String ? Text(d, at + ".function.description") : null;
            var parameters = function.TryGetProperty("parameters", out var p) && p.ValueKind == JsonValueKind.Object ? p.Clone() : JsonDocument.Parse("{\"type\":\"object\"}").RootElement;
            declared.Add(AIFunctionFactory.CreateDeclaration(Text(name, at + ".function.name"), description, parameters));
        }

        options.Tools = declared;
        options.ToolMode = ChatToolMode.Auto;
        options.AllowMultipleToolCalls = request.ParallelToolCalls;
    }

    private static ChatMessage ToMessage(RequestMessage message, int index, OpenAIServerOptions settings)
    {
        string at = $"messages[{index}]";
        var role = message.Role switch
        {
            "user" => ChatRole.User,
            "assistant" => ChatRole.Assistant,
            "system" or "developer" => ChatRole.System,
            "tool" or "function" => throw OpenAIErrorException.BadRequest(at + ".role", $"'{at}.role' \"{message.Role}\" is not supported: this model cannot call tools, so there are no tool results."),
            null => throw OpenAIErrorException.BadRequest(at + ".role", $"'{at}.role' is required."),
            _ => throw OpenAIErrorException.BadRequest(at + ".role", $"'{at}.role' must be \"system\", \"developer\", \"user\" or \"assistant\", not \"{message.Role}\"."),
        };
        RefuseUnknown(message.Unknown, at + ".");
        if (message.Refusal is not null)
        {
            throw OpenAIErrorException.BadRequest(at + ".refusal", $"'{at}.refusal' is not supported by this server.");
        }

        var contents = new List<AIContent>();
        switch (message.Content)
        {
            case null or { ValueKind: JsonValueKind.Null } when role == ChatRole.Assistant:
                break;
            case { ValueKind: JsonValueKind.String } text:
                contents.Add(new TextContent(Text(text, at + ".content")));
                break;
            case { ValueKind: JsonValueKind.Array } parts:
                int part = 0;
                foreach (var element in parts.EnumerateArray())
                {
                    contents.Add(ToContent(element, $"{at}.content[{part++}]", settings));
                }

                break;
            default:
                throw OpenAIErrorException.BadRequest(at + ".content", $"'{at}.content' must be a string or an array of content parts.");
        }

        return new ChatMessage(role, contents) { AuthorName = message.Name };
    }

    private static AIContent ToContent(JsonElement part, string at, OpenAIServerOptions settings)
    {
        if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var typeElement) || typeElement.ValueKind != JsonValueKind.String)
        {
            throw OpenAIErrorException.BadRequest(at + ".type", $"'{at}' must be an object with a string 'type'.");
        }

        string type = Text(typeElement, at + ".type");
        switch (type)
        {
            case "text":
                RefuseFields(part, at, "type", "text");
                return part.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String
                    ? new TextContent(Text(text, at + ".text"))
                    : throw OpenAIErrorException.BadRequest(at + ".text", $"'{at}.text' must be a string.");
            case "image_url":
                RefuseFields(part, at, "type", "image_url");
                return ToImage(part.TryGetProperty("image_url", out var image) ? image : default, at + ".image_url", settings);
            default:
                throw OpenAIErrorException.BadRequest(at + ".type", $"'{at}.type' \"{type}\" is not supported (text, image_url).");
        }
    }

    private static void RefuseFields(JsonElement part, string at, params string[] known)
    {
        foreach (var property in part.EnumerateObject())
        {
            if (!known.Contains(property.Name) && property.Value.ValueKind != JsonValueKind.Null)
            {
                throw OpenAIErrorException.BadRequest($"{at}.{property.Name}", $"'{at}.{property.Name}' is not supported by this server.");
            }
        }
    }

    private static AIContent ToImage(JsonElement image, string at, OpenAIServerOptions settings)
    {
        string url;
        if (image.ValueKind == JsonValueKind.String)
        {
            url = Text(image, at);
        }
        else if (image.ValueKind == JsonValueKind.Object && image.TryGetProperty("url", out var u) && u.ValueKind == JsonValueKind.String)
        {
            // "detail" is a resolution hint; Cobra always resizes to its input size, so every value means the same.
            RefuseFields(image, at, "url", "detail");
            url = Text(u, at + ".url");
        }
        else
        {
            throw OpenAIErrorException.BadRequest(at + ".url", $"'{at}.url' must be a string.");
        }

        if (url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            DataContent data;
            try
            {
                data = new DataContent(url);
            }
            catch (Exception e) when (e is ArgumentException or FormatException or UriFormatException)
            {
                throw OpenAIErrorException.BadRequest(at + ".url", $"'{at}.url' is not a valid data URL.");
            }

            if (!data.MediaType.StartsWith("image/", StringComparison.OrdinalIgnoreCase))
            {
                throw OpenAIErrorException.BadRequest(at + ".url", $"'{at}.url' must be an image data URL (image/png, image/jpeg, ...), not {data.MediaType}.");
            }

            return data;
        }

        if (settings.AllowRemoteImages && Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https")
        {
            return new UriContent(uri, "image/*");
        }

        throw OpenAIErrorException.BadRequest(at + ".url", $"'{at}.url' must be a data: URL" + (settings.AllowRemoteImages ? " or an http(s) URL." : " (remote images are disabled on this server)."));
    }
}
