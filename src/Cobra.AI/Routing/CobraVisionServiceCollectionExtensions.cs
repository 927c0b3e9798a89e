using Cobra.AI;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>
/// Cobra as the eyes of a chat client registered in a container:
/// <c>services.AddKeyedCobraChatClient("cobra", ...); services.AddChatClient(main).UseCobraVision();</c>
/// </summary>
public static class CobraVisionServiceCollectionExtensions
{
    [ThreadStatic]
    private static bool resolvingVision;

    /// <summary>
    /// As <see cref="CobraVisionChatClientBuilderExtensions.UseCobraVision(ChatClientBuilder, IChatClient, Action{CobraVisionOptions}?)"/>,
    /// with Cobra's client resolved from the container when the pipeline is built: the <see cref="IChatClient"/>
    /// keyed <see cref="CobraVisionOptions.VisionServiceKey"/> (default <c>"cobra"</c>, what
    /// <c>AddKeyedCobraChatClient("cobra", ...)</c> registers), or the unkeyed one (<c>AddCobraChatClient</c>)
    /// when the key is null, in which case the pipeline being built must itself be keyed. The container owns Cobra.
    /// </summary>
    /// <param name="builder">The builder returned by <c>AddChatClient</c> or <c>AddKeyedChatClient</c> for the main client.</param>
    /// <param name="configure">Sets the mode, the rule and the service key.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">An option is invalid (named in the message).</exception>
    /// <exception cref="InvalidOperationException">At build time: no such client is registered, or the unkeyed client would be its own eyes.</exception>
    public static ChatClientBuilder UseCobraVision(this ChatClientBuilder builder, Action<CobraVisionOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var settings = CobraVisionChatClientBuilderExtensions.Configure(configure);
        return builder.Use((main, services) => CobraVisionChatClientBuilderExtensions.Create(main, ResolveVision(services, settings.VisionServiceKey), settings, services.GetService<ILoggerFactory>()));
    }

    private static IChatClient ResolveVision(IServiceProvider services, object? key)
    {
        if (resolvingVision)
        {
            // Resolving the unkeyed client from inside its own factory would recurse until the stack overflows.
            throw new InvalidOperationException("UseCobraVision: the vision client is the unkeyed IChatClient, which is the client being built; register Cobra keyed (AddKeyedCobraChatClient(\"cobra\", ...)) or register this pipeline with AddKeyedChatClient.");
        }

        resolvingVision = true;
        try
        {
            return (key is null ? services.GetService<IChatClient>() : services.GetKeyedService<IChatClient>(key))
                ?? throw new InvalidOperationException(key is null
                    ? "UseCobraVision: no unkeyed IChatClient is registered for the vision client; call services.AddCobraChatClient(...) or set CobraVisionOptions.VisionServiceKey."
                    : $"UseCobraVision: no IChatClient keyed '{key}' is registered for the vision client; call services.AddKeyedCobraChatClient(\"{key}\", ...) or set CobraVisionOptions.VisionServiceKey.");
        }
        finally
        {
            resolvingVision = false;
        }
    }
}
