using Cobra.AI;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a Cobra <see cref="IChatClient"/> in a service collection.</summary>
public static class CobraServiceCollectionExtensions
{
    /// <summary>
    /// Registers a singleton <see cref="IChatClient"/> backed by a Cobra model, a <see cref="CobraModelReadiness"/>
    /// (also a health check) and a hosted service that starts loading the model when a host starts, in the
    /// background. Options are validated now. A call made before the model is ready awaits the load with the
    /// call's cancellation (without a host, the first call starts it); a failed load throws
    /// <see cref="InvalidOperationException"/> with the cause on every call. The model is disposed with the container.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Sets the model options.</param>
    /// <returns>A builder for adding middleware (<c>UseLogging</c>, <c>UseOpenTelemetry</c>, ...).</returns>
    public static ChatClientBuilder AddCobraChatClient(this IServiceCollection services, Action<CobraModelOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = Configure(configure);
        return Register(services, null, options);
    }

    /// <summary>As <see cref="AddCobraChatClient(IServiceCollection, Action{CobraModelOptions}?)"/>, with options bound from a configuration section.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="section">A section with <see cref="CobraModelOptions"/> properties (e.g. <c>"Cobra"</c>).</param>
    /// <returns>A builder for adding middleware.</returns>
    public static ChatClientBuilder AddCobraChatClient(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = Bind(section);
        return Register(services, null, options);
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
        return Register(services, serviceKey, options);
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
        return Register(services, serviceKey, options);
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

    /// <summary>One loader per registration (keyed ones under their key); the client and the readiness share it.</summary>
    private static ChatClientBuilder Register(IServiceCollection services, object? serviceKey, CobraModelOptions options)
    {
        CobraChatClientLoader CreateLoader(IServiceProvider provider) => new(options, provider.GetService<ILoggerFactory>(), CobraStateStoreServiceCollectionExtensions.Resolve(provider));
        if (serviceKey is null)
        {
            services.AddSingleton(CreateLoader);
            services.AddSingleton(provider => new CobraModelReadiness(provider.GetRequiredService<CobraChatClientLoader>()));
            services.AddSingleton<IHostedService>(provider => new CobraModelLoadService(provider.GetRequiredService<CobraChatClientLoader>()));
            return services.AddChatClient(provider => new DeferredCobraChatClient(provider.GetRequiredService<CobraChatClientLoader>()));
        }

        services.AddKeyedSingleton(serviceKey, (provider, _) => CreateLoader(provider));
        services.AddKeyedSingleton(serviceKey, (provider, key) => new CobraModelReadiness(provider.GetRequiredKeyedService<CobraChatClientLoader>(key)));
        services.AddSingleton<IHostedService>(provider => new CobraModelLoadService(provider.GetRequiredKeyedService<CobraChatClientLoader>(serviceKey)));
        return services.AddKeyedChatClient(serviceKey, provider => new DeferredCobraChatClient(provider.GetRequiredKeyedService<CobraChatClientLoader>(serviceKey)));
    }
}
