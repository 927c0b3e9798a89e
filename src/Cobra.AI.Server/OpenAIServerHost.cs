using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;

namespace Cobra.AI.Server;

/// <summary>
/// A minimal Kestrel host serving the OpenAI endpoints over one <see cref="IChatClient"/>, with <c>/health</c> and
/// <c>/metrics</c> (Prometheus text through OpenTelemetry: the meters <c>Cobra.AI.Server</c> and <c>Cobra.AI</c>).
/// </summary>
public static class OpenAIServerHost
{
    /// <summary>The engine's meter, exported alongside the server's when the chat client publishes it.</summary>
    public const string EngineMeterName = "Cobra.AI";

    /// <summary>
    /// Starts a host on <paramref name="urls"/> (';'-separated; port 0 picks a free port) and returns it with the
    /// addresses it actually listens on. Stop or dispose the host to stop it; stopping honours
    /// <see cref="OpenAIServerOptions.ShutdownGracePeriod"/>.
    /// </summary>
    /// <param name="client">The chat client to serve (not owned).</param>
    /// <param name="options">Endpoint settings.</param>
    /// <param name="urls">Listen addresses, e.g. <c>http://127.0.0.1:8000</c>.</param>
    /// <param name="minimumLogLevel">Host logging below this level is dropped.</param>
    /// <param name="cancellationToken">Cancels start-up.</param>
    /// <returns>The running host and its listen addresses.</returns>
    /// <exception cref="ArgumentException">An option is invalid (named in the message).</exception>
    public static async Task<(WebApplication Host, IReadOnlyList<string> Addresses)> StartAsync(
        IChatClient client, OpenAIServerOptions options, string urls, LogLevel minimumLogLevel = LogLevel.Warning, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(urls);
        var settings = options.Snapshot();
        settings.Validate();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(urls.Split(';', StringSplitOptions.RemoveEmptyEntries));
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Limits.MaxRequestBodySize = settings.MaxRequestBytes);
        builder.Logging.SetMinimumLevel(minimumLogLevel);

        // Kestrel waits for running requests until the host's shutdown timeout: longer than the grace period, so
        // streams get their final error event instead of a reset.
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = settings.ShutdownGracePeriod + TimeSpan.FromSeconds(5));
        builder.Services.AddSingleton(client);
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics.AddMeter(ServerMetrics.MeterName, EngineMeterName).AddPrometheusExporter());
        var app = builder.Build();
        app.MapOpenAIChatCompletions(settings);
        app.MapPrometheusScrapingEndpoint("/metrics");
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.ToArray() ?? [];
        return (app, addresses);
    }
}
