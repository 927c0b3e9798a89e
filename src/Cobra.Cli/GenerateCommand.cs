using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Cobra.AI.Generation;
using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace Cobra.Cli;

/// <summary><c>cobra generate</c>: the scripting entry point (architecture.md, "Public surface").</summary>
internal static class GenerateCommand
{
    private static readonly HashSet<string> ValueOptions =
    [
        "model-dir", "model-id", "cache-dir", "image", "prompt", "messages", "max-new-tokens", "temperature",
        "top-k", "top-p", "seed", "device", "precision", "logits-out",
    ];

    private static readonly HashSet<string> Flags = ["json"];

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var cli = CliArguments.Parse(args, ValueOptions, Flags);
        if (cli.Has("prompt") == cli.Has("messages"))
        {
            throw new UsageException("Give exactly one of --prompt TEXT or --messages FILE.");
        }

        if (cli.Has("model-dir") && cli.Has("cache-dir"))
        {
            throw new UsageException("Give --model-dir DIR (a hub-mirror folder) or --cache-dir DIR (a Hugging Face cache), not both.");
        }
        var sampling = ReadSampling(cli);

        var turns = cli.Has("prompt")
            ? [("user", cli.Get("prompt")!)]
            : await ReadMessagesAsync(cli.Get("messages")!, stderr, cancellationToken).ConfigureAwait(false);

        var clock = Stopwatch.StartNew();
        var device = TorchPlacement.ParseDevice(cli.Get("device"));
        var precision = TorchPlacement.ParsePrecision(cli.Get("precision"), device);
        if (precision == Precision.Float16)
        {
            await stderr.WriteLineAsync("cobra: warning: fp16 is sensitive to overflow in Cobra and very slow on CPUs; prefer bf16 or fp32.").ConfigureAwait(false);
        }

        var files = await ResolveOrDownloadAsync(cli, stderr, cancellationToken).ConfigureAwait(false);

        // The image is decoded (and rejected, if bad) before any model work.
        var image = cli.Get("image") is { } imagePath ? ImageLoader.LoadFile(imagePath, new ImageLimits()) : null;
        using var engine = new InferenceEngine(CobraPipeline.Load(files, device, precision), new EngineSettings { MaxActive = 1, CacheEntries = 0 }, NullLogger.Instance);
        var loadTime = clock.Elapsed;
        var promptIds = engine.Pipeline.EncodePrompt(turns);
        var request = new GenerationRequest(promptIds, image is null ? null : engine.Pipeline.ResizeForTowers(image), ImageKey: null, sampling, StopSequences: []) { CaptureLogits = cli.Has("logits-out") };
        var result = await RunAsync(engine, request, cancellationToken).ConfigureAwait(false);
        string text = engine.Pipeline.Tokenizer.DecodeForOutput(result.Choice.OutputIds);

        if (cli.Get("logits-out") is { } logitsPath)
        {
            WriteLogits(logitsPath, result.Choice.Logits!);
        }

        if (cli.Has("json"))
        {
            int imageTokens = image is null ? 0 : engine.Pipeline.ImageTokenCount;
            await stdout.WriteLineAsync(ToJson(promptIds, imageTokens, result, text, loadTime).ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping })).ConfigureAwait(false);
        }
        else
        {
            await stdout.WriteLineAsync(text).ConfigureAwait(false);
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
    /// A hub-mirror folder when given; else the Hugging Face cache, downloading what is missing first (with a
    /// progress bar) unless <c>HF_HUB_OFFLINE</c> is set, in which case the error names the missing file.
    /// </summary>
    private static async Task<CobraModelFiles> ResolveOrDownloadAsync(CliArguments cli, TextWriter stderr, CancellationToken cancellationToken)
    {
        string modelId = cli.Get("model-id") ?? "cobra+3b";
        if (cli.Get("model-dir") is { } modelDir)
        {
            return CobraModelFiles.Resolve(new HubMirrorSource(modelDir), modelId);
        }

        string cache = cli.Get("cache-dir") ?? HuggingFaceCacheSource.DefaultRoot();
        try
        {
            return CobraModelFiles.Resolve(new HuggingFaceCacheSource(cache), modelId);
        }
        catch (FileNotFoundException) when (!ModelDownload.Offline)
        {
            await stderr.WriteLineAsync($"cobra: {modelId} is not complete in {cache}; downloading it.").ConfigureAwait(false);
            await DownloadCommand.FetchAsync(modelId, cache, "main", stderr, cancellationToken).ConfigureAwait(false);
            return CobraModelFiles.Resolve(new HuggingFaceCacheSource(cache), modelId);
        }
    }

    /// <summary>
    /// Greedy unless a temperature &gt; 0 is given; --top-k or --top-p alone imply temperature 1, as in
    /// upstream's <c>generate(top_k=..., top_p=...)</c>; --top-k 1 is greedy.
    /// </summary>
    private static SamplingOptions ReadSampling(CliArguments cli)
    {
        bool sampleAsked = cli.Has("top-k") || cli.Has("top-p");
        return new SamplingOptions
        {
            MaxNewTokens = cli.GetInt("max-new-tokens", 512, 1, 1_000_000),
            Temperature = cli.GetDouble("temperature", sampleAsked ? 1.0 : 0.0, 0, 100),
            TopK = cli.GetInt("top-k", 0, 0),
            TopP = cli.GetDouble("top-p", 0, 0, 1),
            Seed = cli.GetLong("seed"),
        };
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
