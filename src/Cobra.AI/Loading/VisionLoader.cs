using System.Text.Json;
using Cobra.AI.Modeling.Vision;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Cobra.AI.Loading;

/// <summary>
/// Builds Cobra's two vision towers from timm / open_clip files: sizes from <c>model_args</c> /
/// <c>timm_model_args</c> when present, else from a table of the real architectures; the run image size from
/// the SigLIP tower's configured input size; DINOv2's pos_embed resampled from its pretraining grid to the
/// run grid at load, as timm's <c>checkpoint_filter_fn</c> does.
/// </summary>
internal static class VisionLoader
{
    /// <summary>The real towers' sizes (timm 0.9.10 model args), for configs that carry none.</summary>
    private static readonly Dictionary<string, VitConfig> KnownArchitectures = new(StringComparer.Ordinal)
    {
        [VisionTowerFiles.DinoArchitecture] = new VitConfig
        {
            PatchSize = 14, EmbedDim = 1024, Depth = 24, NumHeads = 16, InitValues = 1e-5, RegTokens = 4,
            NoEmbedClass = true, ClassToken = true, PretrainImageSize = 518,
        },
        [VisionTowerFiles.SigLipArchitecture] = new VitConfig
        {
            PatchSize = 14, EmbedDim = 1152, Depth = 27, NumHeads = 16, MlpRatio = 3.7362, ClassToken = false,
            PretrainImageSize = 384,
        },
    };

    /// <summary>The sizes of a real timm architecture Cobra uses (<see cref="VisionTowerFiles.DinoArchitecture"/>, <see cref="VisionTowerFiles.SigLipArchitecture"/>).</summary>
    public static VitConfig RealArchitecture(string name) => KnownArchitectures[name];

    /// <summary>Tower sizes and run image size.</summary>
    /// <param name="Dino">DINOv2 sizes.</param>
    /// <param name="SigLip">SigLIP sizes.</param>
    /// <param name="ImageSize">Side of the square images both towers see.</param>
    public sealed record TowerConfigs(VitConfig Dino, VitConfig SigLip, int ImageSize);

    /// <summary>Reads both towers' configs (or falls back to the real architectures).</summary>
    public static TowerConfigs ReadConfigs(VisionTowerFiles files)
    {
        var dino = ReadTowerConfig(files.DinoConfig, VisionTowerFiles.DinoArchitecture, out _);
        var siglip = ReadTowerConfig(files.SigLipConfig, VisionTowerFiles.SigLipArchitecture, out int? runSize);
        return new TowerConfigs(dino, siglip, runSize ?? siglip.PretrainImageSize);
    }

    /// <summary>
    /// Allocates a tower for <paramref name="imageSize"/> and loads it strictly from <paramref name="weights"/>
    /// (keys after <paramref name="keyPrefix"/>; the MAP head, final classifier and mask token are not part of
    /// Cobra's path and are skipped). pos_embed is resampled when its grid differs from the run grid.
    /// </summary>
    public static VisionTransformer LoadTower(VitConfig config, int imageSize, ITensorSource weights, string keyPrefix, ScalarType dtype, Device device)
    {
        int grid = imageSize / config.PatchSize;
        if (grid < 1)
        {
            throw new InvalidDataException($"{weights.SourceName}: image size {imageSize} is smaller than the patch size {config.PatchSize}.");
        }

        // A converted bundle leaves out what Cobra never runs (the last block, the final norm).
        var probe = keyPrefix.Length == 0 ? weights.Keys : weights.Keys.Where(k => k.StartsWith(keyPrefix, StringComparison.Ordinal)).Select(k => k[keyPrefix.Length..]);
        bool withTail = probe.Contains($"blocks.{config.Depth - 1}.norm1.weight");
        var tower = new VisionTransformer(config, grid, dtype, device, withTail);
        try
        {
            using var scope = torch.NewDisposeScope();
            using var trunk = keyPrefix.Length == 0 ? null : weights.WithPrefix(keyPrefix);
            var source = trunk ?? weights;
            var posEmbed = ResamplePosEmbed(source, config, tower.PosEmbedPrefix, grid);
            using var view = new TowerView(source, posEmbed);
            StateDictLoader.Load(tower, view);
            tower.eval();
            return tower;
        }
        catch
        {
            tower.Dispose();
            throw;
        }
    }

    /// <summary>
    /// timm's <c>resample_abs_pos_embed</c>: the stored grid → the run grid, bicubic with antialiasing in
    /// float32 on [1, C, g, g]; prefix positions (if any) pass through.
    /// </summary>
    public static Tensor ResamplePosEmbed(ITensorSource source, VitConfig config, int prefix, int grid)
    {
        // Checked from the header, before anything is read or allocated.
        var shape = source.GetInfo("pos_embed").Shape;
        if (shape.Length != 3 || shape[0] != 1 || shape[2] != config.EmbedDim)
        {
            throw new InvalidDataException($"{source.SourceName}: tensor 'pos_embed' has shape [{string.Join(", ", shape)}], expected [1, N, {config.EmbedDim}].");
        }

        var stored = source.Read("pos_embed").to(ScalarType.Float32);            // [1,prefix+g0²,C]

        long patches = stored.shape[1] - prefix;
        int storedGrid = (int)Math.Round(Math.Sqrt(patches));
        if (patches <= 0 || (long)storedGrid * storedGrid != patches)
        {
            throw new InvalidDataException($"{source.SourceName}: tensor 'pos_embed' holds {patches} patch positions, not a square grid.");
        }

        if (storedGrid == grid)
        {
            return stored;
        }

        var prefixPart = stored.narrow(1, 0, prefix);                            // [1,prefix,C]
        var image = stored.narrow(1, prefix, patches)                            // [1,g0²,C]
            .reshape(1, storedGrid, storedGrid, config.EmbedDim).permute(0, 3, 1, 2); // [1,C,g0,g0]
        var resized = F.interpolate(image, size: [grid, grid], mode: InterpolationMode.Bicubic, align_corners: false, antialias: true); // [1,C,g,g]
        var tokens = resized.permute(0, 2, 3, 1).reshape(1, (long)grid * grid, config.EmbedDim); // [1,g²,C]
        return torch.cat([prefixPart, tokens], 1);
    }

    private static VitConfig ReadTowerConfig(string? path, string fallbackArchitecture, out int? runImageSize)
    {
        runImageSize = null;
        if (path is null)
        {
            return KnownArchitectures[fallbackArchitecture];
        }

        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            string architecture = fallbackArchitecture;
            JsonElement? args = null;
            if (root.TryGetProperty("model_cfg", out var modelCfg) && modelCfg.TryGetProperty("vision_cfg", out var visionCfg))
            {
                // open_clip_config.json
                architecture = Text(visionCfg, "timm_model_name") ?? architecture;
                args = visionCfg.TryGetProperty("timm_model_args", out var a) ? a : null;
                runImageSize = Int(visionCfg, "image_size");
            }
            else
            {
                // timm config.json
                architecture = Text(root, "architecture") ?? architecture;
                args = root.TryGetProperty("model_args", out var a) ? a : null;
                if (root.TryGetProperty("pretrained_cfg", out var pretrained) && pretrained.TryGetProperty("input_size", out var input) && input.ValueKind == JsonValueKind.Array && input.GetArrayLength() == 3)
                {
                    runImageSize = input[2].GetInt32();
                }
            }

            if (args is { } modelArgs && Int(modelArgs, "img_size") is int argSize)
            {
                runImageSize = argSize;
            }

            var baseline = KnownArchitectures.GetValueOrDefault(architecture);
            if (baseline is null && args is null)
            {
                throw new InvalidDataException($"{path}: unknown architecture '{architecture}' and no model_args to build it from (known: {string.Join(", ", KnownArchitectures.Keys)}).");
            }

            return Apply(baseline, args, path).Validated(path) with { PretrainImageSize = runImageSize ?? baseline?.PretrainImageSize ?? 224 };
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e);
        }
    }

    /// <summary>timm's <c>VisionTransformer(**model_args)</c> over the architecture's defaults.</summary>
    private static VitConfig Apply(VitConfig? baseline, JsonElement? args, string path)
    {
        if (args is not { } a)
        {
            return baseline!;
        }

        int Required(string name) => Int(a, name) ?? (baseline is null ? throw new InvalidDataException($"{path}: model_args.{name} is missing.") : 0);
        var start = baseline ?? new VitConfig { EmbedDim = Required("embed_dim"), Depth = Required("depth"), NumHeads = Required("num_heads") };
        return start with
        {
            PatchSize = Int(a, "patch_size") ?? start.PatchSize,
            EmbedDim = Int(a, "embed_dim") ?? start.EmbedDim,
            Depth = Int(a, "depth") ?? start.Depth,
            NumHeads = Int(a, "num_heads") ?? start.NumHeads,
            MlpRatio = Double(a, "mlp_ratio") ?? start.MlpRatio,
            ClassToken = Bool(a, "class_token") ?? start.ClassToken,
            RegTokens = Int(a, "reg_tokens") ?? start.RegTokens,
            NoEmbedClass = Bool(a, "no_embed_class") ?? start.NoEmbedClass,
            InitValues = a.TryGetProperty("init_values", out var iv) ? (iv.ValueKind == JsonValueKind.Number ? iv.GetDouble() : null) : start.InitValues,
        };
    }

    private static string? Text(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static int? Int(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null;

    private static double? Double(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;

    private static bool? Bool(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    /// <summary>
    /// A tower's weights as the module expects them: the resampled pos_embed in place of the stored one, and
    /// without the parts Cobra never runs (SigLIP's MAP head, classifier heads, DINOv2's mask token).
    /// </summary>
    private sealed class TowerView(ITensorSource inner, Tensor posEmbed) : ITensorSource
    {
        private static readonly string[] Skipped = ["attn_pool.", "head.", "fc_norm.", "mask_token"];

        public string SourceName => inner.SourceName;

        public IReadOnlyList<string> Keys { get; } = inner.Keys.Where(k => !Skipped.Any(s => k.StartsWith(s, StringComparison.Ordinal))).ToArray();

        public TensorInfo GetInfo(string key) =>
            key == "pos_embed" ? new TensorInfo(key, posEmbed.dtype, posEmbed.shape) : inner.GetInfo(key);

        public Tensor Read(string key) => key == "pos_embed" ? posEmbed.clone() : inner.Read(key);

        public void ReadInto(string key, Tensor destination)
        {
            if (key == "pos_embed")
            {
                destination.copy_(posEmbed);
                return;
            }

            inner.ReadInto(key, destination);
        }

        public void Dispose()
        {
            // The inner source belongs to the caller; posEmbed to the caller's scope.
        }
    }
}
