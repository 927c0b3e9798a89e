using System.Diagnostics.CodeAnalysis;
using Cobra.AI.Chat;
using Microsoft.Extensions.AI;

namespace Cobra.AI;

/// <summary>Constants and content-based routing rules of <c>UseCobraVision</c>.</summary>
public static class CobraVision
{
    /// <summary>
    /// The diagnostic id under which Microsoft.Extensions.AI marks <see cref="RoutingChatClient"/> and
    /// <see cref="RoutingContext"/> experimental; the members here that take a <see cref="RoutingContext"/> carry it too.
    /// </summary>
    public const string ExperimentalDiagnosticId = "MEAI001";

    /// <summary>Where the diagnostic is explained (Microsoft.Extensions.AI's own page).</summary>
    public const string ExperimentalUrlFormat = "https://aka.ms/dotnet-extensions-warnings/{0}";

    /// <summary>The key Cobra's client is resolved by in the container unless <see cref="CobraVisionOptions.VisionServiceKey"/> says otherwise.</summary>
    public const string DefaultServiceKey = "cobra";

    /// <summary>Start of the text part that replaces an image in Describe mode.</summary>
    public const string DescriptionPrefix = "[image: ";

    /// <summary>End of the text part that replaces an image: the description is untrusted text (it may quote what the image says).</summary>
    public const string DescriptionSuffix = "] (untrusted content from an image description)";

    /// <summary>Route mode: the text part that stands for an image in what the main client is sent (unless <see cref="CobraVisionOptions.KeepImagesForMainClient"/>).</summary>
    public const string OmittedImageText = "[image: not shown to this model; the vision model answers about images]";

    /// <summary><see cref="UsageDetails.AdditionalCounts"/> key: input tokens Cobra spent in the request (included in the totals).</summary>
    public const string VisionInputTokensKey = "cobra_vision_input_tokens";

    /// <summary><see cref="UsageDetails.AdditionalCounts"/> key: output tokens Cobra spent in the request (included in the totals).</summary>
    public const string VisionOutputTokensKey = "cobra_vision_output_tokens";

    /// <summary>
    /// Route mode's default rule: the current turn (the last user message and anything after it) carries an
    /// image (<see cref="DataContent"/> or <see cref="UriContent"/> with an <c>image/*</c> media type, or a
    /// <c>data:</c> URI).
    /// </summary>
    /// <param name="context">The request.</param>
    /// <returns>True when Cobra should answer.</returns>
    [Experimental(ExperimentalDiagnosticId, UrlFormat = ExperimentalUrlFormat)]
    public static bool CurrentTurnHasImage(RoutingContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return VisionContent.CurrentTurn(context.Messages).Any(VisionContent.HasImage);
    }

    /// <summary>Describe mode's default rule: any message of the conversation carries an image.</summary>
    /// <param name="context">The request.</param>
    /// <returns>True when the images should be described.</returns>
    [Experimental(ExperimentalDiagnosticId, UrlFormat = ExperimentalUrlFormat)]
    public static bool ConversationHasImage(RoutingContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.Messages.Any(VisionContent.HasImage);
    }
}

/// <summary>What the routing code needs to know about a conversation's content.</summary>
internal static class VisionContent
{
    public const string DefaultQuestion = "Describe this image.";

    public static bool IsImage(AIContent content) => ImageResolver.IsImage(content);

    public static bool HasImage(ChatMessage message) => message.Contents.Any(IsImage);

    /// <summary>The last user message and what follows it (tool results of a function-calling loop), or all messages without one.</summary>
    public static IEnumerable<ChatMessage> CurrentTurn(IEnumerable<ChatMessage> messages)
    {
        var list = messages as IReadOnlyList<ChatMessage> ?? messages.ToList();
        int start = 0;
        for (int i = list.Count - 1; i >= 0; i--)
        {
            if (list[i].Role == ChatRole.User)
            {
                start = i;
                break;
            }
        }

        for (int i = start; i < list.Count; i++)
        {
            yield return list[i];
        }
    }

    /// <summary>The text of the last user message (what the user asks now), or <see cref="DefaultQuestion"/>.</summary>
    public static string Question(IReadOnlyList<ChatMessage> messages)
    {
        for (int i = messages.Count - 1; i >= 0; i--)
        {
            if (messages[i].Role == ChatRole.User)
            {
                string text = string.Join("\n", messages[i].Contents.OfType<TextContent>().Select(t => t.Text)).Trim();
                return text.Length > 0 ? text : DefaultQuestion;
            }
        }

        return DefaultQuestion;
    }

    /// <summary>The conversation with each image part replaced (messages without images are passed by reference; the inputs are not modified).</summary>
    public static List<ChatMessage> ReplaceImages(IEnumerable<ChatMessage> messages, Func<AIContent, AIContent> replacement) =>
        messages.Select(message =>
        {
            if (!HasImage(message))
            {
                return message;
            }

            var copy = message.Clone();
            copy.Contents = message.Contents.Select(c => IsImage(c) ? replacement(c) : c).ToList();
            return copy;
        }).ToList();

    public static string Mark(string description) => CobraVision.DescriptionPrefix + description + CobraVision.DescriptionSuffix;
}
