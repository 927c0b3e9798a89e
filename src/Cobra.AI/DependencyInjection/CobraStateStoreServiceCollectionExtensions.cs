using Cobra.AI;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Shares Cobra conversation states between replicas through an <see cref="IDistributedCache"/> of the container.</summary>
public static class CobraStateStoreServiceCollectionExtensions
{
    /// <summary>
    /// Makes every Cobra chat client of this container (<c>AddCobraChatClient</c>) use the container's
    /// <see cref="IDistributedCache"/> (for example <c>AddStackExchangeRedisCache</c>, bound to a connection string
    /// from configuration) as the second level of its conversation state cache; this takes precedence over
    /// <see cref="CobraModelOptions.StateStore"/>. The cache is resolved when the model loads and is not owned.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="serviceKey">The key of a keyed <see cref="IDistributedCache"/> registration; null for the plain one.</param>
    /// <returns>The service collection.</returns>
    public static IServiceCollection AddCobraDistributedStateStore(this IServiceCollection services, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.RemoveAll<CobraStateStoreSelection>();
        services.AddSingleton(new CobraStateStoreSelection(serviceKey));
        return services;
    }

    /// <summary>The cache named by <see cref="AddCobraDistributedStateStore"/>, or null when none was; throws when it names a missing one.</summary>
    internal static IDistributedCache? Resolve(IServiceProvider provider)
    {
        var selection = provider.GetService<CobraStateStoreSelection>();
        if (selection is null)
        {
            return null;
        }

        var cache = selection.Key is null ? provider.GetService<IDistributedCache>() : provider.GetKeyedService<IDistributedCache>(selection.Key);
        return cache ?? throw new InvalidOperationException(
            $"AddCobraDistributedStateStore({(selection.Key is null ? "" : $"\"{selection.Key}\"")}) names an IDistributedCache that is not registered: add one first (e.g. services.AddStackExchangeRedisCache(...)).");
    }

    /// <summary>Which registered cache to use.</summary>
    internal sealed record CobraStateStoreSelection(object? Key);
}
