using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Cobra.AI;
using Cobra.AI.Generation;
using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra generate</c>: the scripting entry point (architecture.md, "Public surface"). Parse
/// (<see cref="Create"/>) → options (<see cref="GenerateOptions"/>) → run (<see cref="RunAsync(GenerateOptions, CliContext, CancellationToken)"/>: model files,
/// device and precision from <see cref="CobraModelComposition"/>, then <see cref="GenerateAsync"/>).
/// </summary>
internal static class GenerateCommand
{
    /// <summary>What one <c>cobra generate</c> asks for.</summary>
    /// <param name="Model">Where the model is and how to place it.</param>
    /// <param name="Prompt">A single user prompt, or null with <paramref name="MessagesPath"/>.</param>
    /// <param name="MessagesPath">A JSON conversation file, or null with <paramref name="Prompt"/>.</param>
    /// <param name="ImagePath">An image file, or null.</param>
    /// <param name="Sampling">Sampling settings.</param>
    /// <param name="Json">Print a JSON report instead of the text.</param>
    /// <param name="LogitsOut">Where to write the step logits (safetensors), or null.</param>
    internal sealed record GenerateOptions(CobraModelOptions Model, string? Prompt, string? MessagesPath, string? ImagePath, SamplingOptions Sampling, bool Json, string? LogitsOut);

    public static Command Create(CliContext cli)
    {
        var model = new ModelOptionSet();
        var image = CliOptions.Text("--image", "FILE", "An image to ask about.");
        var prompt = CliOptions.Text("--prompt", "TEXT", "The user's prompt.");
        var messages = CliOptions.Text("--messages", "FILE", "A JSON array of {\"role\": \"user\"|\"assistant\", \"content\": TEXT} turns ending with a user turn.");
        var sampling = new SamplingOptionSet("Most tokens to generate.");
        var json = CliOptions.Flag("--json", "Print token ids, text, usage and timings as JSON.");
        var logitsOut = CliOptions.Text("--logits-out", "FILE", "Write the prefill and step logits to a safetensors file.");
        var command = new Command("generate", "Generate a reply for one prompt or a conversation, optionally about an image.");
        model.AddTo(command);
        foreach (var option in new Option[] { image, prompt, messages })
        {
            command.Options.Add(option);
        }

        sampling.AddTo(command);
        command.Options.Add(json);
        command.Options.Add(logitsOut);

        command.Validators.Add(result =>
        {
            if ((result.GetResult(prompt) is null) == (result.GetResult(messages) is null))
            {
                result.AddError("Give exactly one of --prompt TEXT or --messages FILE.");
            }
        });
        command.SetAction((parse, cancellationToken) =>
        {
            var options = new GenerateOptions(model.Read(parse), parse.GetValue(prompt), parse.GetValue(messages), parse.GetValue(image), sampling.Read(parse), parse.GetValue(json), parse.GetValue(logitsOut));
            return RunAsync(options, cli, cancellationToken);
        });
        return command;
    }

    /// <summary>Reads the conversation, resolves (downloading if needed) the model files and placement, then generates.</summary>
    public static async Task<int> RunAsync(GenerateOptions options, CliContext cli, CancellationToken cancellationToken)
    {
        var turns = options.Prompt is { } text
            ? [("user", text)]
            : await ReadMessagesAsync(options.MessagesPath!, cli.Err, cancellationToken).ConfigureAwait(false);

        var clock = Stopwatch.StartNew();
        var (device, precision) = CobraModelComposition.ResolvePlacement(options.Model);
        if (precision == Precision.Float16)
        {
            await cli.Err.WriteLineAsync("cobra: warning: fp16 is sensitive to overflow in Cobra and very slow on CPUs; prefer bf16 or fp32.").ConfigureAwait(false);
        }

        var bar = new DownloadProgressBar(cli.Err, cli.ErrorIsTerminal);
        CobraModelFiles files;
        try
        {
            files = await CobraModelComposition.ResolveFilesAsync(options.Model, bar, DownloadCommand.Notice(cli, bar), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            bar.Done();
        }

        return await GenerateAsync(options, turns, files, device, precision, clock, cli, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The generation itself: load, encode, generate, print.</summary>
    private static async Task<int> GenerateAsync(GenerateOptions options, List<(string Role, string Content)> turns, CobraModelFiles files, torch.Device device, Precision precision, Stopwatch clock, CliContext cli, CancellationToken cancellationToken)
    {
        // The image is decoded (and rejected, if bad) before any model work.
        var image = options.ImagePath is { } imagePath ? ImageLoader.LoadFile(imagePath, new ImageLimits()) : null;
        using var engine = new InferenceEngine(CobraPipeline.Load(files, device, precision), new EngineSettings { MaxActive = 1, CacheEntries = 0 }, NullLogger.Instance);
        var loadTime = clock.Elapsed;
        var promptIds = engine.Pipeline.EncodePrompt(turns);
        var request = new GenerationRequest(promptIds, image is null ? null : engine.Pipeline.ResizeForTowers(image), ImageKey: null, options.Sampling, StopSequences: []) { CaptureLogits = options.LogitsOut is not null };
        var result = await RunAsync(engine, request, cancellationToken).ConfigureAwait(false);
        string text = engine.Pipeline.Tokenizer.DecodeForOutput(result.Choice.OutputIds);

        if (options.LogitsOut is { } logitsPath)
        {
            WriteLogits(logitsPath, result.Choice.Logits!);
        }

        if (options.Json)
        {
            int imageTokens = image is null ? 0 : engine.Pipeline.ImageTokenCount;
            await cli.Out.WriteLineAsync(ToJson(promptIds, imageTokens, result, text, loadTime).ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping })).ConfigureAwait(false);
        }
        else
        {
            await cli.Out.WriteLineAsync(text).ConfigureAwait(false);
        }

        return 0;
    }

    /// <summary>Submits one request to the engine (the one generation path) and collects its outcome.</summary>
    private static async Task<(ChoiceCompleted Choice, GenerationCompleted Done)> RunAsync(InferenceEngine engine, GenerationRequest request, CancellationToken cancellationToken)
    {
        ChoiceCompleted? choice = null;
        GenerationCompleted? done = null;
        await foreach (var generationEvent in engine.Submit(request, cancellationToken).ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            choice = generationEvent as ChoiceCompleted ?? choice;
            done = generationEvent as GenerationCompleted ?? done;
        }

        return (choice!, done!);
    }

    /// <summary>float32 safetensors: <c>prefill_logits</c> [V] (the row that chose the first token) and <c>step_logits</c> [N, V].</summary>
    private static void WriteLogits(string path, IReadOnlyList<float[]> rows)
    {
        using var scope = torch.NewDisposeScope();
        var steps = torch.tensor(rows.SelectMany(r => r).ToArray(), [rows.Count, rows[0].Length]); // [N,V]
        SafetensorsWriter.Write(path, [("prefill_logits", steps[0]), ("step_logits", steps)]);
    }

    /// <summary>
    /// A JSON array of {"role": "user"|"assistant", "content": TEXT} turns ending with a user turn. System
    /// turns are dropped with a warning: upstream's Zephyr prompt builder always uses an empty system prompt.
    /// </summary>
    private static async Task<List<(string Role, string Content)>> ReadMessagesAsync(string path, TextWriter stderr, CancellationToken cancellationToken)
    {
        JsonNode? root;
        try
        {
            await using var stream = File.OpenRead(path);
            root = await JsonNode.ParseAsync(stream, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e);
        }

        if (root is not JsonArray array || array.Count == 0)
        {
            throw new InvalidDataException($"{path}: expected a non-empty JSON array of {{\"role\", \"content\"}} objects.");
        }

        var turns = new List<(string, string)>();
        for (int i = 0; i < array.Count; i++)
        {
            string? role = array[i]?["role"] is JsonValue r && r.TryGetValue(out string? rs) ? rs : null;
            string? content = array[i]?["content"] is JsonValue c && c.TryGetValue(out string? cs) ? cs : null;
            if (role is null || content is null)
            {
                throw new InvalidDataException($"{path}: message {i} needs string \"role\" and \"content\" fields.");
            }

            if (role == "system")
            {
                await stderr.WriteLineAsync($"cobra: warning: {path}: message {i} is a system message; Cobra's prompt format has no system prompt, so it is ignored.").ConfigureAwait(false);
                continue;
            }

            if (role is not ("user" or "assistant"))
            {
                throw new InvalidDataException($"{path}: message {i} has role '{role}'; use \"user\" or \"assistant\".");
            }

            var expected = turns.Count % 2 == 0 ? "user" : "assistant";
            if (role != expected)
            {
                throw new InvalidDataException($"{path}: message {i} is a '{role}' turn where a '{expected}' turn is expected (turns alternate, starting with the user).");
            }

            turns.Add((role, content));
        }

        return turns.Count % 2 == 1
            ? turns
            : throw new InvalidDataException($"{path}: the conversation must end with a user turn for the model to answer.");
    }

    private static JsonObject ToJson(IReadOnlyList<int> promptIds, int imageTokens, (ChoiceCompleted Choice, GenerationCompleted Done) result, string text, TimeSpan loadTime)
    {
        int generated = result.Choice.OutputIds.Count;
        int prompt = promptIds.Count + imageTokens;
        return new JsonObject
        {
            ["prompt_token_ids"] = new JsonArray(promptIds.Select(i => (JsonNode)i).ToArray()),
            ["output_token_ids"] = new JsonArray(result.Choice.OutputIds.Select(i => (JsonNode)i).ToArray()),
            ["text"] = text,
            ["finish_reason"] = result.Choice.Reason == FinishReason.Stop ? "stop" : "length",
            ["usage"] = new JsonObject
            {
                ["prompt_tokens"] = prompt,
                ["image_tokens"] = imageTokens,
                ["completion_tokens"] = generated,
                ["total_tokens"] = prompt + generated,
            },
            ["timings"] = new JsonObject
            {
                ["load_ms"] = Math.Round(loadTime.TotalMilliseconds, 1),
                ["prefill_ms"] = Math.Round(result.Done.PrefillTime.TotalMilliseconds, 1),
                ["decode_ms"] = Math.Round(result.Done.DecodeTime.TotalMilliseconds, 1),
                ["decode_tokens_per_second"] = generated > 1 ? Math.Round((generated - 1) / result.Done.DecodeTime.TotalSeconds, 2) : null,
            },
        };
    }
}
