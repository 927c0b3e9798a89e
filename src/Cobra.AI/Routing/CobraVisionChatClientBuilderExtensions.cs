using Cobra.AI.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cobra.AI;

/// <summary>Gives any chat client eyes: <c>mainClient.AsBuilder().UseCobraVision(cobra)</c>.</summary>
public static class CobraVisionChatClientBuilderExtensions
{
    /// <summary>
    /// Adds Cobra as the eyes of the pipeline's client (the main client): in <see cref="CobraVisionMode.Route"/>
    /// mode turns that carry images are answered by <paramref name="vision"/>; in
    /// <see cref="CobraVisionMode.Describe"/> mode the main client answers, with each image replaced by Cobra's
    /// answer to the user's question about it. Middleware added before this call (function invocation, logging)
    /// wraps the result and sees one client.
    /// </summary>
    /// <param name="builder">The builder of the main client's pipeline.</param>
    /// <param name="vision">Cobra's client (not owned: dispose it yourself).</param>
    /// <param name="configure">Sets the mode and the rule; see <see cref="CobraVisionOptions"/>.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">An option is invalid (named in the message).</exception>
    public static ChatClientBuilder UseCobraVision(this ChatClientBuilder builder, IChatClient vision, Action<CobraVisionOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(vision);
        var settings = Configure(configure);
        return builder.Use((main, services) => Create(main, vision, settings, services.GetService<ILoggerFactory>()));
    }

    internal static CobraVisionOptions Configure(Action<CobraVisionOptions>? configure)
    {
        var options = new CobraVisionOptions();
        configure?.Invoke(options);
        var settings = options.Snapshot();
        settings.Validate();
        return settings;
    }

#pragma warning disable MEAI001 // The rule's input is the abstractions' experimental RoutingContext; see CobraVision.ExperimentalDiagnosticId.
    internal static IChatClient Create(IChatClient main, IChatClient vision, CobraVisionOptions settings, ILoggerFactory? loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(main);
        if (ReferenceEquals(main, vision))
        {
            throw new ArgumentException("UseCobraVision: the main client and the vision client are the same instance; Cobra would route to itself.", nameof(vision));
        }

        var logger = (ILogger?)loggerFactory?.CreateLogger(typeof(CobraVisionChatClientBuilderExtensions).FullName!) ?? NullLogger.Instance;
        return settings.Mode == CobraVisionMode.Route
            ? new CobraVisionRoutingChatClient(main, vision, settings.NeedsVision ?? CobraVision.CurrentTurnHasImage, settings.KeepImagesForMainClient, logger)
            : new CobraDescribingChatClient(main, vision, settings, settings.NeedsVision ?? CobraVision.ConversationHasImage, logger);
    }
#pragma warning restore MEAI001
}
