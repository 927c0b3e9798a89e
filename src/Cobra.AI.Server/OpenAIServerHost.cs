using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Cobra.AI.Server;

/// <summary>A minimal Kestrel host serving the OpenAI endpoints over one <see cref="IChatClient"/>.</summary>
public static class OpenAIServerHost
{
    /// <summary>
    /// Starts a host on <paramref name="urls"/> (';'-separated; port 0 picks a free port) and returns it with the
    /// addresses it actually listens on. Dispose the host to stop it.
    /// </summary>
    /// <param name="client">The chat client to serve (not owned).</param>
    /// <param name="options">Endpoint settings.</param>
    /// <param name="urls">Listen addresses, e.g. <c>http://127.0.0.1:8000</c>.</param>
    /// <param name="minimumLogLevel">Host logging below this level is dropped.</param>
    /// <param name="cancellationToken">Cancels start-up.</param>
    /// <returns>The running host and its listen addresses.</returns>
    public static async Task<(WebApplication Host, IReadOnlyList<string> Addresses)> StartAsync(
        IChatClient client, OpenAIServerOptions options, string urls, LogLevel minimumLogLevel = LogLevel.Warning, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(urls.Split(';', StringSplitOptions.RemoveEmptyEntries));
        builder.Logging.SetMinimumLevel(minimumLogLevel);
        builder.Services.AddSingleton(client);
        var app = builder.Build();
        app.MapOpenAIChatCompletions(options);
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.ToArray() ?? [];
        return (app, addresses);
    }
}
