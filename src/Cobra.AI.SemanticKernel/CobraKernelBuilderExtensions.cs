using Cobra.AI;
using Cobra.AI.SemanticKernel;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace Microsoft.SemanticKernel;

/// <summary>Registers Cobra in a Semantic Kernel builder.</summary>
public static class CobraKernelBuilderExtensions
{
    /// <summary>The service id Cobra is registered under by default.</summary>
    public const string DefaultServiceId = "cobra";

    /// <summary>
    /// Registers a Cobra <see cref="IChatClient"/> keyed by <paramref name="serviceId"/> (SK's service selection
    /// finds it by that id); the model loads when first resolved.
    /// </summary>
    /// <param name="builder">The kernel builder.</param>
    /// <param name="configure">Sets the model options.</param>
    /// <param name="serviceId">The key; null registers the default (unkeyed) chat client.</param>
    /// <returns>The builder.</returns>
    public static IKernelBuilder AddCobraChatClient(this IKernelBuilder builder, Action<CobraModelOptions>? configure = null, string? serviceId = DefaultServiceId)
    {
        ArgumentNullException.ThrowIfNull(builder);
        if (serviceId is null)
        {
            builder.Services.AddCobraChatClient(configure);
        }
        else
        {
            builder.Services.AddKeyedCobraChatClient(serviceId, configure);
        }

        return builder;
    }

    /// <summary>Adds <see cref="CobraVisionPlugin"/> (function <c>describe_image</c>) over the keyed <c>cobra</c> client.</summary>
    /// <param name="plugins">The kernel builder's plugins.</param>
    /// <param name="pluginName">The plugin name.</param>
    /// <returns>The plugins.</returns>
    public static IKernelBuilderPlugins AddCobraVisionPlugin(this IKernelBuilderPlugins plugins, string pluginName = "vision")
    {
        ArgumentNullException.ThrowIfNull(plugins);
        plugins.Services.AddSingleton(provider => KernelPluginFactory.CreateFromObject(
            new CobraVisionPlugin(provider.GetService<CobraImageReferenceOptions>()), pluginName, provider.GetService<Microsoft.Extensions.Logging.ILoggerFactory>()));
        return plugins;
    }
}
