using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.AI;

namespace Cobra.AI;

/// <summary>How <c>UseCobraVision</c> gives the main chat client eyes.</summary>
public enum CobraVisionMode
{
    /// <summary>
    /// Requests that need vision (by default: the current user turn carries an image) are answered by Cobra; all
    /// others by the main client. Each client receives the caller's options; Cobra gets the conversation as sent,
    /// the main client gets it with image parts replaced by <see cref="CobraVision.OmittedImageText"/> unless
    /// <see cref="CobraVisionOptions.KeepImagesForMainClient"/>.
    /// </summary>
    Route,

    /// <summary>
    /// The main client answers every request. Before it is called, each image in the conversation is answered by
    /// Cobra with the user's latest question, and the image part is replaced by a marked text part
    /// (<see cref="CobraVision.DescriptionPrefix"/> ... <see cref="CobraVision.DescriptionSuffix"/>), so a
    /// text-only model can reason about it.
    /// </summary>
    Describe,
}

/// <summary>
/// Settings of <c>UseCobraVision</c>. Read once when the pipeline is built (copied); never modified by the library.
/// </summary>
public sealed class CobraVisionOptions
{
    /// <summary>Route image turns to Cobra (the default) or describe images to the main client.</summary>
    public CobraVisionMode Mode { get; set; } = CobraVisionMode.Route;

    /// <summary>
    /// Whether a request needs Cobra. In <see cref="CobraVisionMode.Route"/> mode, true sends the request to Cobra;
    /// in <see cref="CobraVisionMode.Describe"/> mode, true describes the conversation's images (false passes it to
    /// the main client untouched). Null uses the mode's default, which decides by content:
    /// <see cref="CobraVision.CurrentTurnHasImage"/> for Route, <see cref="CobraVision.ConversationHasImage"/>
    /// for Describe. <see cref="RoutingContext"/> is experimental in Microsoft.Extensions.AI (diagnostic MEAI001).
    /// </summary>
    [Experimental(CobraVision.ExperimentalDiagnosticId, UrlFormat = CobraVision.ExperimentalUrlFormat)]
    public Func<RoutingContext, bool>? NeedsVision { get; set; }

    /// <summary>
    /// Route mode: pass image parts to the main client as sent, for a main model that sees. By default (false) each
    /// image part of a request that goes to the main client is replaced by the text part
    /// <see cref="CobraVision.OmittedImageText"/>, so a text-only model accepts a conversation whose earlier turn
    /// carried an image (Cobra's answer about it is in the history).
    /// </summary>
    public bool KeepImagesForMainClient { get; set; }

    /// <summary>Describe mode: descriptions kept, keyed by the image's SHA-256 and the question (0 disables the cache).</summary>
    public int DescriptionCacheSize { get; set; } = 64;

    /// <summary>
    /// Describe mode: most distinct images described for one request; a conversation with more is refused with
    /// <see cref="CobraImageLimitException"/> (each image costs a Cobra call).
    /// </summary>
    public int MaxDescribedImages { get; set; } = 8;

    /// <summary>
    /// Describe mode: generation settings of the description calls (null: greedy, at most 256 tokens). The caller's
    /// options go to the main client, which writes the answer.
    /// </summary>
    public ChatOptions? DescriptionOptions { get; set; }

    /// <summary>
    /// The service key of Cobra's <see cref="IChatClient"/> when the overload without a client resolves it from the
    /// container (default <c>"cobra"</c>, as <c>AddKeyedCobraChatClient("cobra", ...)</c> registers it); null
    /// resolves the unkeyed <see cref="IChatClient"/> (<c>AddCobraChatClient</c>), which then must not be the client
    /// being built.
    /// </summary>
    public object? VisionServiceKey { get; set; } = CobraVision.DefaultServiceKey;

#pragma warning disable MEAI001 // RoutingContext: see NeedsVision
    internal CobraVisionOptions Snapshot() => new()
    {
        Mode = Mode,
        NeedsVision = NeedsVision,
        KeepImagesForMainClient = KeepImagesForMainClient,
        DescriptionCacheSize = DescriptionCacheSize,
        MaxDescribedImages = MaxDescribedImages,
        DescriptionOptions = DescriptionOptions?.Clone(),
        VisionServiceKey = VisionServiceKey,
    };
#pragma warning restore MEAI001

    internal void Validate()
    {
        if (!Enum.IsDefined(Mode))
        {
            throw new ArgumentException($"CobraVisionOptions.Mode: {(int)Mode} is not a CobraVisionMode.");
        }

        if (DescriptionCacheSize < 0)
        {
            throw new ArgumentException($"CobraVisionOptions.DescriptionCacheSize must be >= 0, not {DescriptionCacheSize}.");
        }

        if (MaxDescribedImages < 1)
        {
            throw new ArgumentException($"CobraVisionOptions.MaxDescribedImages must be >= 1, not {MaxDescribedImages}.");
        }
    }
}
