using System.CommandLine;
using System.Text;
using Cobra.AI;
using Microsoft.Extensions.AI;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra chat</c>: an interactive multi-turn session over <see cref="CobraChatClient"/>. Each line read is a
/// user turn; the answer streams to stdout. The client keeps the conversation's state, so a turn prefills only
/// its new tokens (<c>--verbose</c> prints how many were reused). <c>/image PATH</c> attaches an image to the next
/// turn, <c>/reset</c> starts over, <c>/exit</c> (or end of input) ends the session; Ctrl+C stops the answer being
/// written, not the session. Works with piped input (no prompts are printed then).
/// </summary>
internal static class ChatCommand
{
    private const string Help = "Commands: /image PATH (attach an image to the next message), /reset (new conversation), /exit. Ctrl+C stops an answer.";

    /// <summary>What one <c>cobra chat</c> asks for.</summary>
    /// <param name="Model">The model and its placement.</param>
    /// <param name="ImagePath">An image for the first message, or null.</param>
    /// <param name="Chat">Sampling settings for every answer.</param>
    /// <param name="Verbose">Print token counts (cached included) after each answer.</param>
    /// <param name="Interactive">Print prompts (stdin is a terminal).</param>
    internal sealed record ChatSessionOptions(CobraModelOptions Model, string? ImagePath, ChatOptions Chat, bool Verbose, bool Interactive);

    public static Command Create(CliContext cli, bool inputIsTerminal)
    {
        var model = new ModelOptionSet();
        var image = CliOptions.Text("--image", "FILE", "An image for the first message (or use /image PATH later).");
        var sampling = new SamplingOptionSet("Most tokens per answer.");
        var verbose = CliOptions.Flag("--verbose", "After each answer, print the token counts, including the prompt tokens reused from the previous turn's state.");
        var command = new Command("chat", "An interactive multi-turn chat (streaming; /image PATH, /reset, /exit; Ctrl+C stops an answer).");
        model.AddTo(command);
        command.Options.Add(image);
        sampling.AddTo(command);
        command.Options.Add(verbose);

        command.SetAction((parse, cancellationToken) =>
        {
            var settings = sampling.Read(parse);
            var chat = new ChatOptions
            {
                MaxOutputTokens = settings.MaxNewTokens,
                Temperature = (float)settings.Temperature,
                TopK = settings.TopK > 0 ? settings.TopK : null,
                TopP = settings.TopP > 0 ? (float)settings.TopP : null,
                Seed = settings.Seed,
            };
            var options = new ChatSessionOptions(model.Read(parse), parse.GetValue(image), chat, parse.GetValue(verbose), inputIsTerminal);
            return RunAsync(options, cli, cancellationToken);
        });
        return command;
    }

    /// <summary>Loads the model (downloading it first if needed), then runs the session until /exit or end of input.</summary>
    public static async Task<int> RunAsync(ChatSessionOptions options, CliContext cli, CancellationToken cancellationToken)
    {
        var pendingImage = options.ImagePath is { } first ? ReadImage(first, options.Model.MaxImageBytes) : null;
        var bar = new DownloadProgressBar(cli.Err, cli.ErrorIsTerminal);
        try
        {
            await CobraModelComposition.ResolveFilesAsync(options.Model, bar, DownloadCommand.Notice(cli, bar), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            bar.Done();
        }

        using var client = await CobraChatClient.LoadAsync(options.Model, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (options.Interactive)
        {
            await cli.Err.WriteLineAsync($"cobra chat: {options.Model.ModelId} ready. {Help}").ConfigureAwait(false);
        }

        var history = new List<ChatMessage>();
        while (true)
        {
            if (options.Interactive)
            {
                await cli.Err.WriteAsync("> ").ConfigureAwait(false);
            }

            string? line;
            try
            {
                // A console read does not observe cancellation: stop waiting for it instead (Ctrl+C at the prompt).
                line = await cli.In.ReadLineAsync(CancellationToken.None).AsTask().WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return 0;                                                        // Ctrl+C at the prompt ends the session
            }

            if (line is null)
            {
                return 0;
            }

            line = line.Trim();
            if (line.Length == 0)
            {
                continue;
            }

            if (line.StartsWith('/'))
            {
                var (verb, argument) = SplitCommand(line);
                switch (verb)
                {
                    case "/exit" or "/quit":
                        return 0;
                    case "/reset":
                        history.Clear();
                        pendingImage = null;
                        await cli.Err.WriteLineAsync("cobra: new conversation.").ConfigureAwait(false);
                        continue;
                    case "/image":
                        try
                        {
                            pendingImage = argument.Length > 0 ? ReadImage(argument, options.Model.MaxImageBytes) : throw new UsageException("/image needs a file path.");
                            await cli.Err.WriteLineAsync($"cobra: {argument} will go with your next message.").ConfigureAwait(false);
                        }
                        catch (Exception e) when (e is IOException or UnauthorizedAccessException or UsageException or ArgumentException)
                        {
                            await cli.Err.WriteLineAsync($"cobra: {e.Message}").ConfigureAwait(false);
                        }

                        continue;
                    case "/help":
                        await cli.Err.WriteLineAsync(Help).ConfigureAwait(false);
                        continue;
                    default:
                        await cli.Err.WriteLineAsync($"cobra: unknown command '{verb}'. {Help}").ConfigureAwait(false);
                        continue;
                }
            }

            var message = new ChatMessage(ChatRole.User, [new TextContent(line)]);
            if (pendingImage is not null)
            {
                message.Contents.Insert(0, pendingImage);
                pendingImage = null;
            }

            history.Add(message);
            await AnswerAsync(client, history, options, cli, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Streams one answer; Ctrl+C (or a bad request) ends the answer, never the session.</summary>
    private static async Task AnswerAsync(CobraChatClient client, List<ChatMessage> history, ChatSessionOptions options, CliContext cli, CancellationToken cancellationToken)
    {
        var answer = new StringBuilder();
        UsageDetails? usage = null;
        using var operation = cli.Interrupts.Begin(cancellationToken);
        try
        {
            await foreach (var update in client.GetStreamingResponseAsync(history, options.Chat, operation.Token).ConfigureAwait(false))
            {
                if (update.Text is { Length: > 0 } text)
                {
                    answer.Append(text);
                    await cli.Out.WriteAsync(text).ConfigureAwait(false);
                    await cli.Out.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                }

                usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
            }

            await cli.Out.WriteLineAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (operation.Interrupted(cancellationToken))
        {
            await cli.Out.WriteLineAsync().ConfigureAwait(false);
            await cli.Err.WriteLineAsync("cobra: answer stopped.").ConfigureAwait(false);
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException or NotSupportedException or InvalidOperationException)
        {
            // A request the model refuses (bad image, over a limit): say why and drop the turn.
            await cli.Err.WriteLineAsync($"cobra: {e.Message}").ConfigureAwait(false);
            history.RemoveAt(history.Count - 1);
            return;
        }

        if (answer.Length > 0)
        {
            history.Add(new ChatMessage(ChatRole.Assistant, answer.ToString()));
        }
        else
        {
            history.RemoveAt(history.Count - 1);                                 // nothing was answered: as if not asked
        }

        if (options.Verbose && usage is not null)
        {
            await cli.Err.WriteLineAsync($"[tokens: prompt {usage.InputTokenCount} ({usage.CachedInputTokenCount ?? 0} cached), answer {usage.OutputTokenCount}]").ConfigureAwait(false);
        }
    }

    private static (string Verb, string Argument) SplitCommand(string line)
    {
        int space = line.IndexOf(' ', StringComparison.Ordinal);
        return space < 0 ? (line.ToLowerInvariant(), "") : (line[..space].ToLowerInvariant(), line[(space + 1)..].Trim().Trim('"'));
    }

    /// <summary>The file's bytes as image content; the client reads the format from the bytes and rejects non-images.</summary>
    private static DataContent ReadImage(string path, long maxBytes)
    {
        string full = Path.GetFullPath(path);
        var info = new FileInfo(full);
        if (!info.Exists)
        {
            throw new FileNotFoundException($"Image file '{path}' does not exist.", path);
        }

        if (info.Length > maxBytes)
        {
            throw new IOException($"Image file '{path}' has {info.Length} bytes, over the {maxBytes}-byte limit.");
        }

        string mediaType = Path.GetExtension(full).ToLowerInvariant() switch
        {
            ".jpg" or ".jpeg" => "image/jpeg",
            ".gif" => "image/gif",
            ".bmp" => "image/bmp",
            ".webp" => "image/webp",
            ".tif" or ".tiff" => "image/tiff",
            _ => "image/png",
        };
        return new DataContent(File.ReadAllBytes(full), mediaType) { Name = Path.GetFileName(full) };
    }
}
