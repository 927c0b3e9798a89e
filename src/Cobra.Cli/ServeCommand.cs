using System.CommandLine;
using Cobra.AI;
using Cobra.AI.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra serve</c>: hosts the OpenAI-compatible endpoints over a Cobra chat client. The server listens at once
/// and answers 503 until the model has loaded (downloading it first when it is not in the cache).
/// </summary>
internal static class ServeCommand
{
    /// <summary>What one <c>cobra serve</c> asks for.</summary>
    /// <param name="Model">The model and its placement.</param>
    /// <param name="Server">The endpoint options.</param>
    /// <param name="Urls">Where to listen.</param>
    internal sealed record ServeOptions(CobraModelOptions Model, OpenAIServerOptions Server, string Urls);

    public static Command Create(CliContext cli)
    {
        var model = new ModelOptionSet();
        var urls = CliOptions.Text("--urls", "URLS", "Where to listen (default http://127.0.0.1:8000; ';' separates several).");
        var apiKey = CliOptions.Text("--api-key", "KEY", "Require 'Authorization: Bearer KEY' on every request.");
        var allowRemote = CliOptions.Flag("--allow-remote-images", "Fetch http(s) image URLs.");
        var maxPending = CliOptions.Int("--max-pending", "Requests in flight before answering 429.", 128, 1, 100_000);
        var stateStore = CliOptions.Text("--state-store", "redis://HOST:PORT", "Share conversation state between server instances through Redis (default: in this process only).");
        var command = new Command("serve", "Host OpenAI-compatible /v1/chat/completions and /v1/models (503 until the model has loaded).");
        model.AddTo(command);
        foreach (var option in new Option[] { urls, apiKey, allowRemote, maxPending, stateStore })
        {
            command.Options.Add(option);
        }

        command.SetAction((parse, cancellationToken) =>
        {
            var modelOptions = model.Read(parse);
            modelOptions.AllowRemoteImages = parse.GetValue(allowRemote);
            modelOptions.StateStore = parse.GetValue(stateStore);
            var server = new OpenAIServerOptions
            {
                ApiKey = parse.GetValue(apiKey),
                ModelId = modelOptions.ModelId,
                AllowRemoteImages = modelOptions.AllowRemoteImages,
                MaxPendingRequests = parse.GetValue(maxPending),
            };
            return RunAsync(new ServeOptions(modelOptions, server, parse.GetValue(urls) ?? "http://127.0.0.1:8000"), cli, cancellationToken);
        });
        return command;
    }

    private static async Task<int> RunAsync(ServeOptions options, CliContext cli, CancellationToken cancellationToken)
    {
        var loading = new LoadingChatClient();
        var (app, addresses) = await OpenAIServerHost.StartAsync(loading, options.Server, options.Urls, cancellationToken: cancellationToken).ConfigureAwait(false);
        await using var host = app;
        await cli.Out.WriteLineAsync($"cobra serve: listening on {string.Join(";", addresses)}; loading {options.Model.ModelId}").ConfigureAwait(false);
        var bar = new DownloadProgressBar(cli.Err, cli.ErrorIsTerminal);
        try
        {
            await CobraModelComposition.ResolveFilesAsync(options.Model, bar, DownloadCommand.Notice(cli, bar), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            bar.Done();
        }

        loading.Inner = await CobraChatClient.LoadAsync(options.Model, app.Services.GetService<ILoggerFactory>(), cancellationToken: cancellationToken).ConfigureAwait(false);
        await cli.Out.WriteLineAsync("cobra serve: ready").ConfigureAwait(false);
        await app.WaitForShutdownAsync(cancellationToken).ConfigureAwait(false);
        loading.Inner.Dispose();
        return 0;
    }
}
