using Cobra.AI;
using Cobra.AI.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra serve</c>: hosts the OpenAI-compatible endpoints over a Cobra chat client. The server listens at once
/// and answers 503 until the model has loaded.
/// </summary>
internal static class ServeCommand
{
    private static readonly HashSet<string> ValueOptions = ["model-dir", "cache-dir", "model-id", "urls", "api-key", "device", "precision", "max-pending", "state-store"];
    private static readonly HashSet<string> Flags = ["allow-remote-images"];

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, CancellationToken cancellationToken)
    {
        var cli = CliArguments.Parse(args, ValueOptions, Flags);
        var model = new CobraModelOptions
        {
            ModelPath = cli.Get("model-dir"),
            CacheDirectory = cli.Get("cache-dir"),
            ModelId = cli.Get("model-id") ?? "cobra+3b",
            Device = cli.Get("device") ?? "auto",
            Precision = cli.Get("precision"),
            AllowRemoteImages = cli.Has("allow-remote-images"),
            AllowDownload = cli.Get("model-dir") is null,
            StateStore = cli.Get("state-store"),
        };
        var server = new OpenAIServerOptions
        {
            ApiKey = cli.Get("api-key"),
            ModelId = model.ModelId,
            AllowRemoteImages = model.AllowRemoteImages,
            MaxPendingRequests = cli.GetInt("max-pending", 128, 1, 100_000),
        };
        string urls = cli.Get("urls") ?? "http://127.0.0.1:8000";

        var loading = new LoadingChatClient();
        var (app, addresses) = await OpenAIServerHost.StartAsync(loading, server, urls, cancellationToken: cancellationToken).ConfigureAwait(false);
        await using var host = app;
        await stdout.WriteLineAsync($"cobra serve: listening on {string.Join(";", addresses)}; loading {model.ModelId}").ConfigureAwait(false);
        loading.Inner = await CobraChatClient.LoadAsync(model, app.Services.GetService<ILoggerFactory>(), cancellationToken: cancellationToken).ConfigureAwait(false);
        await stdout.WriteLineAsync("cobra serve: ready").ConfigureAwait(false);
        await app.WaitForShutdownAsync(cancellationToken).ConfigureAwait(false);
        loading.Inner.Dispose();
        return 0;
    }
}
