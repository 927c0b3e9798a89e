using System.Globalization;
using System.Text.Json;
using Cobra.AI.Generation;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace Cobra.AI.Chat;

/// <summary>A chat request in Cobra's terms: Zephyr turns, at most one image, sampling settings.</summary>
/// <param name="Turns">Alternating user/assistant turns ending with a user turn.</param>
/// <param name="Image">The image content to use, or null.</param>
/// <param name="Sampling">Sampling settings.</param>
/// <param name="StopSequences">Stop strings.</param>
internal sealed record CobraPrompt(IReadOnlyList<(string Role, string Content)> Turns, AIContent? Image, SamplingOptions Sampling, IReadOnlyList<string> StopSequences)
{
    /// <summary>Completions to fork from the prefill.</summary>
    public int Choices { get; init; } = 1;

    /// <summary>Report token log-probabilities.</summary>
    public bool Logprobs { get; init; }

    /// <summary>Alternatives per token.</summary>
    public int TopLogprobs { get; init; }

    /// <summary>Structured output asked for (JSON or a JSON schema), or null for text.</summary>
    public ChatResponseFormat? ResponseFormat { get; init; }
}

/// <summary>
/// Maps Microsoft.Extensions.AI messages and options to a <see cref="CobraPrompt"/>. Never modifies its inputs.
/// Policies (documented on <see cref="CobraModelOptions"/>): system text and instructions per
/// <see cref="SystemPromptPolicy"/>; several images per <see cref="MultipleImagePolicy"/>; consecutive messages of
/// one role are joined with a newline; data or URIs that are not images are refused; tool messages and other
/// content are ignored (logged at Debug).
/// </summary>
internal static partial class ChatRequestMapper
{
    /// <summary>Key of the repetition penalty in <see cref="ChatOptions.AdditionalProperties"/>.</summary>
    public const string RepetitionPenaltyKey = CobraAdditionalProperties.RepetitionPenalty;

    /// <summary>The most alternatives per token a request may ask for (OpenAI's limit).</summary>
    public const int MaxTopLogprobs = 20;

    public static CobraPrompt ToCobraPrompt(IEnumerable<ChatMessage> messages, ChatOptions? options, CobraModelOptions settings, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(messages);
        RefuseUnsupported(options, logger);

        var system = new List<string>();
        if (!string.IsNullOrWhiteSpace(options?.Instructions))
        {
            system.Add(options.Instructions);
        }

        var turns = new List<(string Role, List<string> Texts)>();
        var images = new List<AIContent>();
        foreach (var message in messages)
        {
            ArgumentNullException.ThrowIfNull(message, nameof(messages));
            var texts = new List<string>();
            foreach (var content in message.Contents)
            {
                switch (content)
                {
                    case TextContent text:
                        texts.Add(text.Text);
                        break;
                    case var image when ImageResolver.IsImage(image):
                        images.Add(image);
                        break;
                    case DataContent or UriContent:
                        throw ImageResolver.NotAnImage(content);
                    default:
                        LogIgnoredContent(logger, content.GetType().Name, message.Role.Value);
                        break;
                }
            }

            string? role = message.Role == ChatRole.User ? "user" : message.Role == ChatRole.Assistant ? "assistant" : null;
            if (message.Role == ChatRole.System)
            {
                system.AddRange(texts);
            }
            else if (role is null)
            {
                LogIgnoredMessage(logger, message.Role.Value);
            }
            else if (turns.Count > 0 && turns[^1].Role == role)
            {
                turns[^1].Texts.AddRange(texts);
            }
            else
            {
                turns.Add((role, texts));
            }
        }

        if (turns.Count == 0 || turns[0].Role != "user")
        {
            throw new ArgumentException("The conversation must start with a user message.", nameof(messages));
        }

        if (turns[^1].Role != "user")
        {
            throw new ArgumentException("The conversation must end with a user message for Cobra to answer.", nameof(messages));
        }

        ApplySystemPolicy(system, turns, settings.SystemPrompts, logger);
        var result = turns.Select(t => (t.Role, string.Join("\n", t.Texts))).ToList();
        int choices = ReadInt(options?.AdditionalProperties, CobraAdditionalProperties.ChoiceCount) ?? 1;
        if (choices < 1 || choices > settings.MaxChoices)
        {
            throw new ArgumentOutOfRangeException(nameof(options), choices, $"ChatOptions.AdditionalProperties[\"{CobraAdditionalProperties.ChoiceCount}\"] must be in [1, {settings.MaxChoices}] (CobraModelOptions.MaxChoices), not {choices}.");
        }

        bool logprobs = ReadBool(options?.AdditionalProperties, CobraAdditionalProperties.Logprobs) ?? false;
        int topLogprobs = ReadInt(options?.AdditionalProperties, CobraAdditionalProperties.TopLogprobs) ?? 0;
        if (topLogprobs < 0 || topLogprobs > MaxTopLogprobs)
        {
            throw new ArgumentOutOfRangeException(nameof(options), topLogprobs, $"ChatOptions.AdditionalProperties[\"{CobraAdditionalProperties.TopLogprobs}\"] must be in [0, {MaxTopLogprobs}], not {topLogprobs}.");
        }

        if (topLogprobs > 0 && !logprobs)
        {
            throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{CobraAdditionalProperties.TopLogprobs}\"] needs \"{CobraAdditionalProperties.Logprobs}\" = true.", nameof(options));
        }

        var format = options?.ResponseFormat is ChatResponseFormatText ? null : options?.ResponseFormat;
        return new CobraPrompt(result, ChooseImage(images, settings.MultipleImages, logger), ToSampling(options), options?.StopSequences?.ToArray() ?? [])
        {
            Choices = choices,
            Logprobs = logprobs,
            TopLogprobs = topLogprobs,
            ResponseFormat = format,
        };
    }

    /// <summary>
    /// Options the abstractions define that Cobra cannot honour: refused when ignoring them would change the
    /// answer's meaning (a required tool call, a background continuation); tools in auto mode are allowed, as the
    /// model may always answer in text (logged once per client); reasoning and background permission are hints.
    /// </summary>
    private static void RefuseUnsupported(ChatOptions? options, ILogger logger)
    {
        if (options is null)
        {
            return;
        }

        if (options.ToolMode is RequiredChatToolMode)
        {
            throw new NotSupportedException("Cobra cannot call tools: ChatOptions.ToolMode requires a tool call.");
        }

        if (options.ContinuationToken is not null)
        {
            throw new NotSupportedException("Cobra has no background responses: ChatOptions.ContinuationToken is not supported.");
        }

        if (options.Tools is { Count: > 0 })
        {
            LogToolsIgnored(logger, options.Tools.Count);
        }
    }

    private static void ApplySystemPolicy(List<string> system, List<(string Role, List<string> Texts)> turns, SystemPromptPolicy policy, ILogger logger)
    {
        var text = string.Join("\n", system.Where(s => !string.IsNullOrWhiteSpace(s)));
        if (text.Length == 0)
        {
            return;
        }

        switch (policy)
        {
            case SystemPromptPolicy.Reject:
                throw new ArgumentException("The request carries system text (a system message or ChatOptions.Instructions), which Cobra's prompt format has no place for; CobraModelOptions.SystemPrompts is Reject.");
            case SystemPromptPolicy.Ignore:
                LogSystemIgnored(logger);
                break;
            default:
                turns[0].Texts.Insert(0, text);
                break;
        }
    }

    private static AIContent? ChooseImage(List<AIContent> images, MultipleImagePolicy policy, ILogger logger)
    {
        if (images.Count <= 1)
        {
            return images.FirstOrDefault();
        }

        if (policy == MultipleImagePolicy.Reject)
        {
            throw new ArgumentException($"The conversation carries {images.Count} images; Cobra sees one per conversation (CobraModelOptions.MultipleImages is Reject).");
        }

        LogEarlierImagesIgnored(logger, images.Count - 1);
        return images[^1];
    }

    /// <summary>Greedy unless a temperature &gt; 0 is given (upstream's effective default).</summary>
    private static SamplingOptions ToSampling(ChatOptions? options)
    {
        if (options is null)
        {
            return SamplingOptions.Greedy;
        }

        return new SamplingOptions
        {
            MaxNewTokens = options.MaxOutputTokens ?? SamplingOptions.Greedy.MaxNewTokens,
            Temperature = options.Temperature ?? 0,
            TopK = options.TopK ?? 0,
            TopP = options.TopP ?? 0,
            Seed = options.Seed,
            FrequencyPenalty = options.FrequencyPenalty ?? 0,
            PresencePenalty = options.PresencePenalty ?? 0,
            RepetitionPenalty = ReadDouble(options.AdditionalProperties, RepetitionPenaltyKey) ?? 1.0,
        };
    }

    private static int? ReadInt(AdditionalPropertiesDictionary? properties, string key)
    {
        double? value = ReadDouble(properties, key);
        if (value is null)
        {
            return null;
        }

        return value == Math.Floor(value.Value) && Math.Abs(value.Value) <= int.MaxValue
            ? (int)value.Value
            : throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{key}\"] must be an integer, not {value}.");
    }

    private static bool? ReadBool(AdditionalPropertiesDictionary? properties, string key)
    {
        if (properties is null || !properties.TryGetValue(key, out var value) || value is null)
        {
            return null;
        }

        return value switch
        {
            bool b => b,
            JsonElement { ValueKind: JsonValueKind.True } => true,
            JsonElement { ValueKind: JsonValueKind.False } => false,
            string s when bool.TryParse(s, out var parsed) => parsed,
            _ => throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{key}\"] must be true or false, not {value.GetType().Name}."),
        };
    }

    private static double? ReadDouble(AdditionalPropertiesDictionary? properties, string key)
    {
        if (properties is null || !properties.TryGetValue(key, out var value) || value is null)
        {
            return null;
        }

        return value switch
        {
            double d => d,
            float f => f,
            int i => i,
            long l => l,
            decimal m => (double)m,
            string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var parsed) => parsed,
            JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
            _ => throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{key}\"] must be a number, not {value.GetType().Name}."),
        };
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Count} tool(s) offered in ChatOptions.Tools: Cobra cannot call tools and answers in text")]
    private static partial void LogToolsIgnored(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Ignored {ContentType} in a {Role} message: Cobra reads text and one image")]
    private static partial void LogIgnoredContent(ILogger logger, string contentType, string role);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Ignored a {Role} message: Cobra's prompt has user and assistant turns only")]
    private static partial void LogIgnoredMessage(ILogger logger, string role);

    [LoggerMessage(Level = LogLevel.Warning, Message = "System text ignored (CobraModelOptions.SystemPrompts is Ignore): upstream Cobra has no system prompt")]
    private static partial void LogSystemIgnored(ILogger logger);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Count} earlier image(s) ignored: Cobra sees one image per conversation, the latest is used")]
    private static partial void LogEarlierImagesIgnored(ILogger logger, int count);
}
