namespace Cobra.Cli;

/// <summary>
/// The <c>cobra</c> tool. Exit codes: 0 success, 1 a clear user-facing error (message on stderr, no stack
/// trace), 2 bad arguments.
/// </summary>
internal static class CobraCli
{
    public const string Usage = """
        Usage: cobra <command> [options]

        Commands:
          generate   Generate a reply for one prompt or a conversation.
                     [--model-dir DIR | --cache-dir DIR] [--model-id ID] [--image FILE]
                     (--prompt TEXT | --messages FILE) [--max-new-tokens N] [--temperature T]
                     [--top-k K] [--top-p P] [--seed S] [--device auto|cpu|cuda[:N]]
                     [--precision fp32|bf16|fp16] [--json] [--logits-out FILE]
          serve      Host OpenAI-compatible /v1/chat/completions and /v1/models (503 until the model has loaded).
                     [--model-dir DIR | --cache-dir DIR] [--model-id ID] [--urls http://127.0.0.1:PORT]
                     [--api-key KEY] [--allow-remote-images] [--max-pending N] [--device D] [--precision P]
                     [--state-store redis://HOST:PORT]
          convert    Write a compact bundle (a hub folder: pos-embeds resampled, unused tensors dropped) to --output DIR.
                     [--model-dir DIR | --cache-dir DIR] [--model-id ID] --output DIR [--precision bf16|fp32]
          download   Fetch (or verify) every model file into the Hugging Face cache (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).
                     [--model-id ID] [--cache-dir DIR] [--revision REV]
          bench      Time the full-size model with random weights (nothing downloaded): --part llm (default), vision, load, serve or statestore.
                     [--part llm|vision|load|serve|statestore] [--state-store redis://HOST:PORT] [--skip-vision] [--precision fp32|bf16|all] [--prefill-tokens N] [--decode-tokens N] [--layers N]
                     [--threads N] [--skip-sequential] [--question-tokens N] [--tokens-per-request N] [--json]
        """;

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            await stdout.WriteLineAsync(Usage).ConfigureAwait(false);
            return args.Length == 0 ? 2 : 0;
        }

        try
        {
            var rest = args.Skip(1).ToArray();
            return args[0] switch
            {
                "generate" => await GenerateCommand.RunAsync(rest, stdout, stderr, cancellationToken).ConfigureAwait(false),
                "bench" => BenchCommand.Run(rest, stdout),
                "serve" => await ServeCommand.RunAsync(rest, stdout, cancellationToken).ConfigureAwait(false),
                "convert" => await ConvertCommand.RunAsync(rest, stdout, cancellationToken).ConfigureAwait(false),
                "download" => await DownloadCommand.RunAsync(rest, stdout, stderr, cancellationToken).ConfigureAwait(false),
                _ => throw new UsageException($"Unknown command '{args[0]}'."),
            };
        }
        catch (UsageException e)
        {
            await stderr.WriteLineAsync($"cobra: {e.Message}\n\n{Usage}").ConfigureAwait(false);
            return 2;
        }
        catch (OperationCanceledException)
        {
            await stderr.WriteLineAsync("cobra: cancelled").ConfigureAwait(false);
            return 1;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException or TimeoutException or HttpRequestException
                                      or InvalidOperationException or NotSupportedException or KeyNotFoundException
                                      or System.Text.Json.JsonException or System.Runtime.InteropServices.ExternalException)
        {
            await stderr.WriteLineAsync($"cobra: {e.Message}").ConfigureAwait(false);
            return 1;
        }
    }
}
