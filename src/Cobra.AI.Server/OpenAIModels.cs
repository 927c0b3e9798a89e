using System.Text.Json;
using System.Text.Json.Serialization;

namespace Cobra.AI.Server;

/// <summary>The body of <c>POST /v1/chat/completions</c>; fields this server knows by name (the rest are refused).</summary>
internal sealed class ChatCompletionRequest
{
    [JsonPropertyName("model")]
    public string? Model { get; set; }

    [JsonPropertyName("messages")]
    public List<RequestMessage>? Messages { get; set; }

    [JsonPropertyName("temperature")]
    public double? Temperature { get; set; }

    [JsonPropertyName("top_p")]
    public double? TopP { get; set; }

    [JsonPropertyName("max_tokens")]
    public int? MaxTokens { get; set; }

    [JsonPropertyName("max_completion_tokens")]
    public int? MaxCompletionTokens { get; set; }

    [JsonPropertyName("seed")]
    public long? Seed { get; set; }

    [JsonPropertyName("frequency_penalty")]
    public double? FrequencyPenalty { get; set; }

    [JsonPropertyName("presence_penalty")]
    public double? PresencePenalty { get; set; }

    [JsonPropertyName("repetition_penalty")]
    public double? RepetitionPenalty { get; set; }

    /// <summary>A string, an array of strings, or null.</summary>
    [JsonPropertyName("stop")]
    public JsonElement? Stop { get; set; }

    [JsonPropertyName("n")]
    public int? N { get; set; }

    [JsonPropertyName("stream")]
    public bool? Stream { get; set; }

    [JsonPropertyName("stream_options")]
    public StreamOptions? StreamOptions { get; set; }

    [JsonPropertyName("response_format")]
    public ResponseFormat? ResponseFormat { get; set; }

    [JsonPropertyName("logprobs")]
    public bool? Logprobs { get; set; }

    [JsonPropertyName("top_logprobs")]
    public int? TopLogprobs { get; set; }

    /// <summary>Kept raw: only its presence and shape matter (Cobra cannot call tools).</summary>
    [JsonPropertyName("tools")]
    public JsonElement? Tools { get; set; }

    /// <summary>A string (<c>none</c>, <c>auto</c>, <c>required</c>) or a named function object.</summary>
    [JsonPropertyName("tool_choice")]
    public JsonElement? ToolChoice { get; set; }

    [JsonPropertyName("parallel_tool_calls")]
    public bool? ParallelToolCalls { get; set; }

    /// <summary>Output modalities; only <c>["text"]</c> is served.</summary>
    [JsonPropertyName("modalities")]
    public List<string>? Modalities { get; set; }

    /// <summary>An end-user id for the caller's own abuse tracking; it does not change the answer.</summary>
    [JsonPropertyName("user")]
    public string? User { get; set; }

    /// <summary>Everything else, refused by name.</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unknown { get; set; }
}

/// <summary>One entry of <c>messages</c>.</summary>
internal sealed class RequestMessage
{
    [JsonPropertyName("role")]
    public string? Role { get; set; }

    /// <summary>A string, an array of content parts, or null.</summary>
    [JsonPropertyName("content")]
    public JsonElement? Content { get; set; }

    [JsonPropertyName("name")]
    public string? Name { get; set; }

    /// <summary>Sent back by clients with a previous assistant turn; must be null (Cobra never refuses in-band).</summary>
    [JsonPropertyName("refusal")]
    public string? Refusal { get; set; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unknown { get; set; }
}

/// <summary><c>stream_options</c>.</summary>
internal sealed class StreamOptions
{
    [JsonPropertyName("include_usage")]
    public bool? IncludeUsage { get; set; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unknown { get; set; }
}

/// <summary><c>response_format</c>.</summary>
internal sealed class ResponseFormat
{
    [JsonPropertyName("type")]
    public string? Type { get; set; }

    [JsonPropertyName("json_schema")]
    public JsonSchemaFormat? JsonSchema { get; set; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unknown { get; set; }
}

/// <summary><c>response_format.json_schema</c>.</summary>
internal sealed class JsonSchemaFormat
{
    [JsonPropertyName("name")]
    public string? Name { get; set; }

    [JsonPropertyName("description")]
    public string? Description { get; set; }

    [JsonPropertyName("schema")]
    public JsonElement? Schema { get; set; }

    [JsonPropertyName("strict")]
    public bool? Strict { get; set; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unknown { get; set; }
}

/// <summary>A <c>chat.completion</c>.</summary>
internal sealed record ChatCompletion(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("object")] string Object,
    [property: JsonPropertyName("created")] long Created,
    [property: JsonPropertyName("model")] string Model,
    [property: JsonPropertyName("choices")] IReadOnlyList<CompletionChoice> Choices,
    [property: JsonPropertyName("usage")] CompletionUsage Usage);

/// <summary>One choice of a <c>chat.completion</c>.</summary>
internal sealed record CompletionChoice(
    [property: JsonPropertyName("index")] int Index,
    [property: JsonPropertyName("message")] AssistantMessage Message,
    [property: JsonPropertyName("logprobs"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] ChoiceLogprobs? Logprobs,
    [property: JsonPropertyName("finish_reason")] string FinishReason);

/// <summary>The answer of one choice.</summary>
internal sealed record AssistantMessage(
    [property: JsonPropertyName("role")] string Role,
    [property: JsonPropertyName("content"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Content,
    [property: JsonPropertyName("refusal"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Refusal);

/// <summary>A <c>chat.completion.chunk</c>.</summary>
internal sealed record ChatCompletionChunk(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("object")] string Object,
    [property: JsonPropertyName("created")] long Created,
    [property: JsonPropertyName("model")] string Model,
    [property: JsonPropertyName("choices")] IReadOnlyList<ChunkChoice> Choices,
    [property: JsonPropertyName("usage")] CompletionUsage? Usage);

/// <summary>One choice's part of a chunk.</summary>
internal sealed record ChunkChoice(
    [property: JsonPropertyName("index")] int Index,
    [property: JsonPropertyName("delta")] ChunkDelta Delta,
    [property: JsonPropertyName("logprobs")] ChoiceLogprobs? Logprobs,
    [property: JsonPropertyName("finish_reason"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

/// <summary>What a chunk adds to a choice.</summary>
internal sealed record ChunkDelta(
    [property: JsonPropertyName("role")] string? Role,
    [property: JsonPropertyName("content")] string? Content);

/// <summary><c>logprobs</c> of a choice.</summary>
internal sealed record ChoiceLogprobs(
    [property: JsonPropertyName("content")] IReadOnlyList<TokenLogprob> Content,
    [property: JsonPropertyName("refusal"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] IReadOnlyList<TokenLogprob>? Refusal);

/// <summary>One token's log-probability with its alternatives.</summary>
internal sealed record TokenLogprob(
    [property: JsonPropertyName("token")] string Token,
    [property: JsonPropertyName("logprob")] double Logprob,
    [property: JsonPropertyName("bytes")] IReadOnlyList<int> Bytes,
    [property: JsonPropertyName("top_logprobs")] IReadOnlyList<TopLogprob> TopLogprobs);

/// <summary>An alternative token.</summary>
internal sealed record TopLogprob(
    [property: JsonPropertyName("token")] string Token,
    [property: JsonPropertyName("logprob")] double Logprob,
    [property: JsonPropertyName("bytes")] IReadOnlyList<int> Bytes);

/// <summary>Token counts.</summary>
internal sealed record CompletionUsage(
    [property: JsonPropertyName("prompt_tokens")] long PromptTokens,
    [property: JsonPropertyName("completion_tokens")] long CompletionTokens,
    [property: JsonPropertyName("total_tokens")] long TotalTokens,
    [property: JsonPropertyName("prompt_tokens_details")] PromptTokensDetails PromptTokensDetails);

/// <summary>How many prompt tokens came from the cache.</summary>
internal sealed record PromptTokensDetails([property: JsonPropertyName("cached_tokens")] long CachedTokens);

/// <summary>OpenAI's error body.</summary>
internal sealed record ErrorResponse([property: JsonPropertyName("error")] ErrorBody Error);

/// <summary>OpenAI's error fields.</summary>
internal sealed record ErrorBody(
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("param"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Param,
    [property: JsonPropertyName("code"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Code);

/// <summary><c>GET /v1/models</c>.</summary>
internal sealed record ModelList(
    [property: JsonPropertyName("object")] string Object,
    [property: JsonPropertyName("data")] IReadOnlyList<ModelInfo> Data);

/// <summary>One served model.</summary>
internal sealed record ModelInfo(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("object")] string Object,
    [property: JsonPropertyName("created")] long Created,
    [property: JsonPropertyName("owned_by")] string OwnedBy,
    [property: JsonPropertyName("input_modalities")] IReadOnlyList<string> InputModalities);

/// <summary><c>GET /health</c>.</summary>
internal sealed record HealthStatus([property: JsonPropertyName("status")] string Status);

/// <summary>Source-generated (de)serialization of the wire types: no reflection, trimming-safe.</summary>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(ChatCompletionRequest))]
[JsonSerializable(typeof(ChatCompletion))]
[JsonSerializable(typeof(ChatCompletionChunk))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(ModelList))]
[JsonSerializable(typeof(HealthStatus))]
internal sealed partial class OpenAIJsonContext : JsonSerializerContext;
