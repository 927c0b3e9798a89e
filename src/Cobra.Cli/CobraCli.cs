using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace Cobra.Cli;

/// <summary>
/// The <c>cobra</c> tool, on System.CommandLine: per-command <c>--help</c>, typo suggestions and validation
/// messages. Exit codes: 0 success, 1 a clear user-facing error (message on stderr, no stack trace), 2 bad arguments.
/// </summary>
internal static class CobraCli
{
    private static readonly Dictionary<string, string> BenchHelp = new(StringComparer.Ordinal)
    {
        ["part"] = "llm (default), vision, load, serve or statestore.",
        ["precision"] = "fp32, bf16 or all (default).",
        ["prefill-tokens"] = "Prompt tokens to prefill (default 800).",
        ["decode-tokens"] = "Tokens to decode (default 32).",
        ["layers"] = "Mamba layers, 1-64 (default 64).",
        ["threads"] = "CPU threads (default: all cores).",
        ["question-tokens"] = "Question tokens after the image (vision part, default 30).",
        ["tokens-per-request"] = "Tokens per request (serve part).",
        ["clients"] = "Concurrent client counts, comma-separated (serve part).",
        ["image-every"] = "Every Nth serve client sends a new image (default 4; 0: text only).",
        ["requests-per-client"] = "Requests each serve client sends one after another (default 1).",
        ["read-bytes"] = "MiB of distinct buffers the memory-read probe reads (default 2048).",
        ["tokenizer"] = "A GPT-NeoX tokenizer.json for the structured-output mask cost (serve part; default: the repository fixture).",
        ["skip-sequential"] = "Skip the slow sequential scan.",
        ["json"] = "Print the report as JSON.",
        ["state-store"] = "Redis for the statestore part (default redis://127.0.0.1:6379).",
        ["skip-vision"] = "statestore part: a text conversation, no vision towers.",
    };

    /// <summary>Runs the tool with the console's streams.</summary>
    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default) =>
        RunAsync(args, new CliContext(stdout, stderr, TextReader.Null, ErrorIsTerminal: false, new CliInterrupts()), inputIsTerminal: false, cancellationToken);

    /// <summary>Runs the tool in <paramref name="cli"/>'s console.</summary>
    public static async Task<int> RunAsync(string[] args, CliContext cli, bool inputIsTerminal, CancellationToken cancellationToken = default)
    {
        var root = Build(cli, inputIsTerminal);
        var parse = root.Parse(args);
        var invocation = new InvocationConfiguration
        {
            Output = cli.Out,
            Error = cli.Err,
            EnableDefaultExceptionHandler = false,
            ProcessTerminationTimeout = null,                                    // Ctrl+C is routed by Program (CliInterrupts)
        };

        if (parse.Errors.Count > 0)
        {
            return await ReportUsageErrorAsync(parse, cli, cancellationToken).ConfigureAwait(false);
        }

        try
        {
            return await parse.InvokeAsync(invocation, cancellationToken).ConfigureAwait(false);
        }
        catch (UsageException e)
        {
            await cli.Err.WriteLineAsync($"cobra: {e.Message}\n\n{UsageLine(parse)}").ConfigureAwait(false);
            return 2;
        }
        catch (OperationCanceledException)
        {
            await cli.Err.WriteLineAsync("cobra: cancelled").ConfigureAwait(false);
            return 1;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException or TimeoutException or HttpRequestException
                                      or InvalidOperationException or NotSupportedException or KeyNotFoundException
                                      or System.Text.Json.JsonException or System.Runtime.InteropServices.ExternalException)
        {
            // ArgumentException appends " (Parameter 'x')": the message already names what is wrong.
            string message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
            await cli.Err.WriteLineAsync($"cobra: {message}").ConfigureAwait(false);
            return 1;
        }
    }

    /// <summary>The command tree; built per run so that every run has its own console.</summary>
    internal static Command Build(CliContext cli, bool inputIsTerminal)
    {
        var root = new RootCommand("Run the Cobra vision-language model: generate, chat, serve an OpenAI-compatible API, download, convert, bench.");
        foreach (var option in root.Options.OfType<HelpOption>())
        {
            if (option.Action is HelpAction help)
            {
                help.MaxWidth = 110;                                             // no console width in tests or pipes
            }
        }

        var (bench, readBench) = CliArguments.Declare(
            "bench", "Time the full-size model with random weights (nothing downloaded): --part llm (default), vision, load, serve or statestore.",
            BenchCommand.ValueOptions, BenchCommand.Flags, BenchHelp);
        bench.SetAction(parse => BenchCommand.Run(readBench(parse), cli.Out, cli.Err));
        root.Subcommands.Add(GenerateCommand.Create(cli));
        root.Subcommands.Add(ChatCommand.Create(cli, inputIsTerminal));
        root.Subcommands.Add(ServeCommand.Create(cli));
        root.Subcommands.Add(DownloadCommand.Create(cli));
        root.Subcommands.Add(ConvertCommand.Create(cli));
        root.Subcommands.Add(bench);
        return root;
    }

    /// <summary>The parse errors, typo suggestions and a usage line on stderr; exit code 2.</summary>
    private static async Task<int> ReportUsageErrorAsync(ParseResult parse, CliContext cli, CancellationToken cancellationToken)
    {
        foreach (var error in parse.Errors)
        {
            await cli.Err.WriteLineAsync($"cobra: {error.Message}").ConfigureAwait(false);
        }

        // System.CommandLine's own typo corrections ("Did you mean ...?"), without repeating the errors or the full help.
        var suggestions = new StringWriter();
        var quiet = new InvocationConfiguration { Output = suggestions, Error = TextWriter.Null, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
        if (parse.Action is ParseErrorAction action)
        {
            action.ShowHelp = false;
            action.ShowTypoCorrections = true;
            await parse.InvokeAsync(quiet, cancellationToken).ConfigureAwait(false);
        }

        if (suggestions.ToString().Trim() is { Length: > 0 } typo)
        {
            await cli.Err.WriteLineAsync(typo).ConfigureAwait(false);
        }

        await cli.Err.WriteLineAsync($"\n{UsageLine(parse)}").ConfigureAwait(false);
        return 2;
    }

    private static string UsageLine(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        return command is RootCommand
            ? "Usage: cobra <command> [options]   (commands: generate, chat, serve, download, convert, bench)\nRun 'cobra --help' or 'cobra <command> --help' for every option."
            : $"Usage: cobra {command.Name} [options]\nRun 'cobra {command.Name} --help' for every option.";
    }
}
