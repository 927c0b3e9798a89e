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
    internal static readonly Dictionary<string, string> LlmRepos = new(StringComparer.Ordinal)
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

    /// <summary>The projector specifier (<c>no-align+fused-gelu-mlp</c>).</summary>
    public required string ArchSpecifier { get; init; }

    /// <summary>How images are fitted to the run size (<c>resize-naive</c>, <c>resize-crop</c>, <c>letterbox</c>).</summary>
    public required string ImageResizeStrategy { get; init; }

    /// <summary>The vision towers' files, or null when the folder has none (text-only use).</summary>
    public VisionTowerFiles? Vision { get; init; }

    /// <summary>
    /// Resolves every file in a hub-mirror folder laid out as <c>&lt;root&gt;/&lt;org&gt;/&lt;repo&gt;/&lt;file&gt;</c>
    /// (the golden kits' <c>hub/</c> folder). Throws <see cref="FileNotFoundException"/> naming the first
    /// missing file and <see cref="InvalidDataException"/> for a config that does not describe a Cobra model.
    /// </summary>
    public static CobraModelFiles FromHubMirror(string root, string modelId = "cobra+3b") => Resolve(new HubMirrorSource(root), modelId);

    /// <summary>
    /// Resolves every file from <paramref name="source"/>. Throws <see cref="FileNotFoundException"/> naming the
    /// first missing file and <see cref="InvalidDataException"/> for a config that does not describe a Cobra model.
    /// </summary>
    public static CobraModelFiles Resolve(IModelFileSource source, string modelId = "cobra+3b")
    {
        string Find(string repo, string file) =>
            source.Find(repo, file) ?? throw new FileNotFoundException($"Model file '{repo}/{file}' not found in the {source.Description}.", $"{repo}/{file}");

        string configPath = Find(CobraRepo, $"{modelId}/config.json");
        var (llmId, visionId, maxLength, arch, resize) = ReadRunConfig(configPath);
        string llmRepo = LlmRepos.TryGetValue(llmId, out var repo)
            ? repo
            : throw new InvalidDataException($"{configPath}: unknown llm_backbone_id '{llmId}' (known: {string.Join(", ", LlmRepos.Keys)}).");

        string? safetensors = source.Find(CobraRepo, $"{modelId}/checkpoints/latest-checkpoint.safetensors");
        return new CobraModelFiles
        {
            ModelId = modelId,
            CobraConfigPath = configPath,
            CheckpointPath = safetensors ?? Find(CobraRepo, $"{modelId}/checkpoints/latest-checkpoint.pt"),
            LlmBackboneId = llmId,
            LlmConfigPath = Find(llmRepo, "config.json"),
            TokenizerPath = Find(llmRepo, "tokenizer.json"),
            LlmMaxLength = maxLength,
            VisionBackboneId = visionId,
            ArchSpecifier = arch,
            ImageResizeStrategy = resize,
            Vision = VisionTowerFiles.Resolve(source, visionId, configPath),
        };
    }

    /// <summary>Reads the <c>model</c> fields upstream's <c>cobra.load</c> uses.</summary>
    internal static (string LlmId, string VisionId, int MaxLength, string Arch, string Resize) ReadRunConfig(string path)
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
            return (Text("llm_backbone_id"), Text("vision_backbone_id"), maxLength, Text("arch_specifier"), Text("image_resize_strategy"));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e);
        }
    }
}

/// <summary>
/// Weight and config files of the two vision towers of <c>dinosiglip-vit-so-*</c>, as timm resolves them:
/// safetensors first, then the PyTorch <c>.bin</c>; SigLIP from the plain-timm <c>.webli</c> repo when present
/// (same tensors, no text tower), else from the open_clip repo timm 0.9.10 (Cobra's pin) loads (keys under
/// <c>visual.trunk.</c>).
/// </summary>
/// <param name="DinoWeights">DINOv2 weights file.</param>
/// <param name="DinoConfig">DINOv2 timm <c>config.json</c>, when present.</param>
/// <param name="SigLipWeights">SigLIP weights file.</param>
/// <param name="SigLipConfig">SigLIP <c>open_clip_config.json</c> or timm <c>config.json</c>, when present.</param>
/// <param name="SigLipKeyPrefix">Prefix of the SigLIP trunk's keys in its file (<c>visual.trunk.</c> for open_clip).</param>
internal sealed record VisionTowerFiles(string DinoWeights, string? DinoConfig, string SigLipWeights, string? SigLipConfig, string SigLipKeyPrefix)
{
    /// <summary>Repo of the DINOv2 tower.</summary>
    public const string DinoRepo = "timm/vit_large_patch14_reg4_dinov2.lvd142m";

    /// <summary>open_clip repo of the SigLIP tower (what timm 0.9.10 loads).</summary>
    public const string OpenClipRepo = "timm/ViT-SO400M-14-SigLIP-384";

    /// <summary>Plain-timm repo of the SigLIP tower (newer timm).</summary>
    public const string WebliRepo = "timm/vit_so400m_patch14_siglip_384.webli";

    /// <summary>timm architecture name of the DINOv2 tower.</summary>
    public const string DinoArchitecture = "vit_large_patch14_reg4_dinov2";

    /// <summary>timm architecture name of the SigLIP tower.</summary>
    public const string SigLipArchitecture = "vit_so400m_patch14_siglip_384";

    /// <summary>
    /// Finds the towers of <paramref name="visionBackboneId"/> in <paramref name="source"/>; null when no tower
    /// file is there at all; <see cref="FileNotFoundException"/> when only some are.
    /// </summary>
    public static VisionTowerFiles? Resolve(IModelFileSource source, string visionBackboneId, string configPath)
    {
        if (!visionBackboneId.StartsWith("dinosiglip-vit-so-", StringComparison.Ordinal))
        {
            throw new NotSupportedException($"{configPath}: vision backbone '{visionBackboneId}' is not supported; only the DINOv2 + SigLIP backbones (dinosiglip-vit-so-*) are.");
        }

        string? First(string repo, params string[] files) =>
            files.Select(f => source.Find(repo, f)).FirstOrDefault(p => p is not null);

        string? dino = First(DinoRepo, "model.safetensors", "pytorch_model.bin");
        string? openClip = First(OpenClipRepo, "open_clip_model.safetensors", "open_clip_pytorch_model.bin");
        string? webli = First(WebliRepo, "model.safetensors", "pytorch_model.bin");
        if (dino is null && openClip is null && webli is null)
        {
            return null;
        }

        if (dino is null)
        {
            throw new FileNotFoundException($"DINOv2 weights '{DinoRepo}/model.safetensors' (or pytorch_model.bin) not found in the {source.Description}.");
        }

        if (openClip is null && webli is null)
        {
            throw new FileNotFoundException($"SigLIP weights '{OpenClipRepo}/open_clip_model.safetensors' or '{WebliRepo}/model.safetensors' not found in the {source.Description}.");
        }

        // The plain-timm file is preferred: the open_clip one also carries the text tower (twice the size).
        return webli is not null
            ? new VisionTowerFiles(dino, First(DinoRepo, "config.json"), webli, First(WebliRepo, "config.json"), "")
            : new VisionTowerFiles(dino, First(DinoRepo, "config.json"), openClip!, First(OpenClipRepo, "open_clip_config.json"), "visual.trunk.");
    }
}
