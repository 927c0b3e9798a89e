using System.Text.Json;
using Cobra.AI.Imaging;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Projection;
using Cobra.AI.Modeling.Vision;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>How images must be prepared for a loaded model.</summary>
/// <param name="ImageSize">Side of the square both towers see.</param>
/// <param name="ResizeStrategy">Upstream's <c>image_resize_strategy</c>.</param>
/// <param name="Dino">DINOv2 normalisation.</param>
/// <param name="SigLip">SigLIP normalisation.</param>
internal sealed record ImageSettings(int ImageSize, ResizeStrategy ResizeStrategy, TowerNormalization Dino, TowerNormalization SigLip);

/// <summary>Builds a whole <see cref="CobraModel"/> from resolved <see cref="CobraModelFiles"/>.</summary>
internal static class CobraModelLoader
{
    /// <summary>
    /// Loads the LLM and, when the files include them, both vision towers and the projector, all in
    /// <paramref name="dtype"/> on <paramref name="device"/>. Returns the image settings (null when text-only).
    /// </summary>
    public static (CobraModel Model, ImageSettings? Images) Load(CobraModelFiles files, ScalarType dtype, Device device)
    {
        using var checkpoint = LanguageModelLoader.OpenCheckpoint(files.CheckpointPath);
        var llm = LanguageModelLoader.Load(LanguageModelLoader.ReadConfig(files.LlmConfigPath), checkpoint, dtype, device);
        if (files.Vision is null)
        {
            return (new CobraModel(null, null, llm), null);
        }

        DinoSigLipEncoder? vision = null;
        Projector? projector = null;
        try
        {
            var configs = VisionLoader.ReadConfigs(files.Vision);
            vision = new DinoSigLipEncoder(
                LoadTower(files.Vision.DinoWeights, configs.Dino, configs.ImageSize, "", dtype, device),
                LoadTower(files.Vision.SigLipWeights, configs.SigLip, configs.ImageSize, files.Vision.SigLipKeyPrefix, dtype, device));
            projector = Projector.Create(files.ArchSpecifier, vision.FeatureWidth, llm.Config.DModel, dtype, device);
            using (var part = LanguageModelLoader.ModulePart(checkpoint, "projector"))
            {
                StateDictLoader.Load(projector, part);
            }

            projector.eval();
            var images = new ImageSettings(
                configs.ImageSize,
                ParseStrategy(files),
                ReadNormalization(files.Vision.DinoConfig) ?? TowerNormalization.Dino,
                ReadNormalization(files.Vision.SigLipConfig) ?? TowerNormalization.SigLip);
            return (new CobraModel(vision, projector, llm), images);
        }
        catch
        {
            vision?.Dispose();
            projector?.Dispose();
            llm.Dispose();
            throw;
        }
    }

    private static VisionTransformer LoadTower(string path, VitConfig config, int imageSize, string prefix, ScalarType dtype, Device device)
    {
        using var weights = LanguageModelLoader.OpenCheckpoint(path);
        return VisionLoader.LoadTower(config, imageSize, weights, prefix, dtype, device);
    }

    /// <summary>pretrained_cfg mean/std of a timm config.json (open_clip configs carry none).</summary>
    private static ResizeStrategy ParseStrategy(CobraModelFiles files)
    {
        try
        {
            return CobraImageTransform.ParseStrategy(files.ImageResizeStrategy);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{files.CobraConfigPath}: {e.Message}", e);
        }
    }

    private static TowerNormalization? ReadNormalization(string? configPath)
    {
        if (configPath is null)
        {
            return null;
        }

        using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
        if (!doc.RootElement.TryGetProperty("pretrained_cfg", out var cfg)
            || !cfg.TryGetProperty("mean", out var mean) || !cfg.TryGetProperty("std", out var std)
            || mean.GetArrayLength() != 3 || std.GetArrayLength() != 3)
        {
            return null;
        }

        return new TowerNormalization(
            mean.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray(),
            std.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray());
    }
}
