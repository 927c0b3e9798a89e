using System.Text.Json;

namespace Cobra.AI.Loading;

/// <summary>
/// The files one Cobra model is made of, found by Hugging Face repo id + file name exactly as upstream's
/// <c>cobra.load</c> asks for them (cobra-spec §2), and the run settings read from Cobra's <c>config.json</c>.
/// </summary>
internal sealed record CobraModelFiles
{
    /// <summary>The Hugging Face repo holding Cobra's run configs and checkpoints.</summary>
    public const string CobraRepo = "han1997/cobra";

    /// <summary>Upstream's registry: LLM backbone id -> Hugging Face repo of its config and tokenizer.</summary>
    private static readonly Dictionary<string, string> LlmRepos = new(StringComparer.Ordinal)
    {
        ["mamba-2.8b-zephyr"] = "xiuyul/mamba-2.8b-zephyr",
        ["mamba-2.8b-slimpj"] = "state-spaces/mamba-2.8b-slimpj",
        ["mamba-2.8b"] = "state-spaces/mamba-2.8b",
    };

    /// <summary>Cobra model id, e.g. <c>cobra+3b</c>.</summary>
    public required string ModelId { get; init; }

    /// <summary>Cobra's run config (<c>{model_id}/config.json</c>).</summary>
    public required string CobraConfigPath { get; init; }

    /// <summary>The checkpoint: <c>latest-checkpoint.safetensors</c> when converted, else the released <c>.pt</c>.</summary>
    public required string CheckpointPath { get; init; }

    /// <summary>The LLM backbone id (<c>mamba-2.8b-zephyr</c>).</summary>
    public required string LlmBackboneId { get; init; }

    /// <summary>The LLM's <c>config.json</c>.</summary>
    public required string LlmConfigPath { get; init; }

    /// <summary>The LLM's <c>tokenizer.json</c>.</summary>
    public required string TokenizerPath { get; init; }

    /// <summary>Prompt text is truncated to this many tokens (image tokens not counted).</summary>
    public int LlmMaxLength { get; init; } = 2048;

    /// <summary>The vision backbone id (<c>dinosiglip-vit-so-384px</c>).</summary>
    public required string VisionBackboneId { get; init; }

    /// <summary>
    /// Resolves every file in a hub-mirror folder laid out as <c>&lt;root&gt;/&lt;org&gt;/&lt;repo&gt;/&lt;file&gt;</c>
    /// (the golden kits' <c>hub/</c> folder). Throws <see cref="FileNotFoundException"/> naming the first
    /// missing file and <see cref="InvalidDataException"/> for a config that does not describe a Cobra model.
    /// </summary>
    public static CobraModelFiles FromHubMirror(string root, string modelId = "cobra+3b")
    {
        if (!Directory.Exists(root))
        {
            throw new DirectoryNotFoundException($"Model folder '{root}' does not exist.");
        }

        string Find(string repo, string file)
        {
            string path = Path.Combine(root, repo, file);
            return File.Exists(path)
                ? path
                : throw new FileNotFoundException($"Model file '{repo}/{file}' not found under '{root}' (looked for '{path}').", path);
        }

        string configPath = Find(CobraRepo, $"{modelId}/config.json");
        var (llmId, visionId, maxLength) = ReadRunConfig(configPath);
        string llmRepo = LlmRepos.TryGetValue(llmId, out var repo)
            ? repo
            : throw new InvalidDataException($"{configPath}: unknown llm_backbone_id '{llmId}' (known: {string.Join(", ", LlmRepos.Keys)}).");

        string safetensors = Path.Combine(root, CobraRepo, modelId, "checkpoints", "latest-checkpoint.safetensors");
        return new CobraModelFiles
        {
            ModelId = modelId,
            CobraConfigPath = configPath,
            CheckpointPath = File.Exists(safetensors) ? safetensors : Find(CobraRepo, $"{modelId}/checkpoints/latest-checkpoint.pt"),
            LlmBackboneId = llmId,
            LlmConfigPath = Find(llmRepo, "config.json"),
            TokenizerPath = Find(llmRepo, "tokenizer.json"),
            LlmMaxLength = maxLength,
            VisionBackboneId = visionId,
        };
    }

    /// <summary>Reads <c>model.llm_backbone_id</c>, <c>model.vision_backbone_id</c> and <c>model.llm_max_length</c>.</summary>
    private static (string LlmId, string VisionId, int MaxLength) ReadRunConfig(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (!doc.RootElement.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{path}: no 'model' object (not a Cobra run config).");
            }

            string Text(string name) =>
                model.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && !string.IsNullOrEmpty(v.GetString())
                    ? v.GetString()!
                    : throw new InvalidDataException($"{path}: 'model.{name}' is missing.");

            int maxLength = model.TryGetProperty("llm_max_length", out var m) && m.ValueKind == JsonValueKind.Number && m.TryGetInt32(out int n) && n > 0 ? n : 2048;
            return (Text("llm_backbone_id"), Text("vision_backbone_id"), maxLength);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e);
        }
    }
}
