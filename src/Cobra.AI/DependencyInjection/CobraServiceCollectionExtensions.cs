using Cobra.AI;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a Cobra <see cref="IChatClient"/> in a service collection.</summary>
public static class CobraServiceCollectionExtensions
{
    /// <summary>
    /// Registers a singleton <see cref="IChatClient"/> backed by a Cobra model. Options are validated now; the
    /// model loads when the client is first resolved and is disposed with the container.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Sets the model options.</param>
    /// <returns>A builder for adding middleware (<c>UseLogging</c>, <c>UseOpenTelemetry</c>, ...).</returns>
    public static ChatClientBuilder AddCobraChatClient(this IServiceCollection services, Action<CobraModelOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = Configure(configure);
        return services.AddChatClient(provider => Load(provider, options));
    }

    /// <summary>As <see cref="AddCobraChatClient(IServiceCollection, Action{CobraModelOptions}?)"/>, with options bound from a configuration section.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="section">A section with <see cref="CobraModelOptions"/> properties (e.g. <c>"Cobra"</c>).</param>
    /// <returns>A builder for adding middleware.</returns>
    public static ChatClientBuilder AddCobraChatClient(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = Bind(section);
        return services.AddChatClient(provider => Load(provider, options));
    }

    /// <summary>Registers a keyed singleton Cobra <see cref="IChatClient"/>.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="serviceKey">The key.</param>
    /// <param name="configure">Sets the model options.</param>
    /// <returns>A builder for adding middleware.</returns>
    public static ChatClientBuilder AddKeyedCobraChatClient(this IServiceCollection services, object? serviceKey, Action<CobraModelOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = Configure(configure);
        return services.AddKeyedChatClient(serviceKey, provider => Load(provider, options));
    }

    /// <summary>Registers a keyed singleton Cobra <see cref="IChatClient"/> with options from a configuration section.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="serviceKey">The key.</param>
    /// <param name="section">A section with <see cref="CobraModelOptions"/> properties.</param>
    /// <returns>A builder for adding middleware.</returns>
    public static ChatClientBuilder AddKeyedCobraChatClient(this IServiceCollection services, object? serviceKey, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = Bind(section);
        return services.AddKeyedChatClient(serviceKey, provider => Load(provider, options));
    }

    private static CobraModelOptions Configure(Action<CobraModelOptions>? configure)
    {
        var options = new CobraModelOptions();
        configure?.Invoke(options);
        var snapshot = options.Snapshot();
        snapshot.Validate();
        return snapshot;
    }

    private static CobraModelOptions Bind(IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(section);
        var options = new CobraModelOptions();
        section.Bind(options);
        options.Validate();
        return options;
    }

    private static CobraChatClient Load(IServiceProvider provider, CobraModelOptions options) =>
        CobraChatClient.LoadAsync(options, provider.GetService<ILoggerFactory>(), CobraStateStoreServiceCollectionExtensions.Resolve(provider), null, default).GetAwaiter().GetResult();
}
