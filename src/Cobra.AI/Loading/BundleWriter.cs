using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>What a conversion wrote.</summary>
/// <param name="SourceBytes">Bytes of the weight files read.</param>
/// <param name="BundleBytes">Bytes of the weight files written.</param>
/// <param name="ContentHash">sha256 over the written files' hashes, in path order.</param>
internal sealed record BundleReport(long SourceBytes, long BundleBytes, string ContentHash);

/// <summary>
/// Converts a Cobra model into a compact bundle that is itself a hub-mirror folder (so every loader path reads
/// it): one safetensors checkpoint (projector + LLM, without the duplicate lm_head), one safetensors per tower
/// with pos_embed already at the run grid and without what Cobra never runs (each tower's last block and
/// final norm, SigLIP's MAP head and text tower), explicit <c>model_args</c>, the tokenizer, and
/// <c>cobra-bundle.json</c> with per-file sha256 and a content hash.
/// </summary>
internal static class BundleWriter
{
    /// <summary>Writes the bundle of <paramref name="files"/> to <paramref name="output"/> in <paramref name="dtype"/>.</summary>
    public static BundleReport Write(CobraModelFiles files, string output, ScalarType dtype)
    {
        var (model, images) = CobraModelLoader.Load(files, ScalarType.Float32, torch.CPU);
        using (model)
        {
            if (model.Vision is null || model.Projector is null || images is null)
            {
                throw new InvalidDataException($"{files.CobraConfigPath}: the vision tower files are missing, so there is nothing complete to convert.");
            }

            var written = new List<string>();
            string Copy(string from, string repo, string name)
            {
                string to = Target(output, repo, name);
                File.Copy(from, to, overwrite: true);
                return to;
            }

            Copy(files.CobraConfigPath, CobraModelFiles.CobraRepo, $"{files.ModelId}/config.json");
            string llmRepo = CobraModelFiles.LlmRepos[files.LlmBackboneId];
            Copy(files.LlmConfigPath, llmRepo, "config.json");
            Copy(files.TokenizerPath, llmRepo, "tokenizer.json");
            foreach (var extra in new[] { "tokenizer_config.json", "special_tokens_map.json" })
            {
                string path = Path.Combine(Path.GetDirectoryName(files.TokenizerPath)!, extra);
                if (File.Exists(path))
                {
                    Copy(path, llmRepo, extra);
                }
            }

            var checkpoint = model.Projector.state_dict().Select(kv => ("projector." + kv.Key, kv.Value))
                .Concat(model.LanguageModel.state_dict().Select(kv => ("llm_backbone.llm." + kv.Key, kv.Value)));
            written.Add(WriteTensors(Target(output, CobraModelFiles.CobraRepo, $"{files.ModelId}/checkpoints/latest-checkpoint.safetensors"), checkpoint, dtype));
            written.Add(WriteTower(output, VisionTowerFiles.DinoRepo, VisionTowerFiles.DinoArchitecture, model.Vision.Dino, images.ImageSize, images.Dino, dtype));
            written.Add(WriteTower(output, VisionTowerFiles.WebliRepo, VisionTowerFiles.SigLipArchitecture, model.Vision.SigLip, images.ImageSize, images.SigLip, dtype));

            long sourceBytes = new[] { files.CheckpointPath, files.Vision!.DinoWeights, files.Vision.SigLipWeights }.Sum(p => new FileInfo(p).Length);
            return WriteManifest(output, files.ModelId, dtype, written, sourceBytes);
        }
    }

    private static string WriteTower(string output, string repo, string architecture, VisionTransformer tower, int imageSize, Imaging.TowerNormalization normalization, ScalarType dtype)
    {
        var config = tower.Config;
        var kept = tower.state_dict()
            .Where(kv => !kv.Key.StartsWith($"blocks.{config.Depth - 1}.", StringComparison.Ordinal) && !kv.Key.StartsWith("norm.", StringComparison.Ordinal))
            .Select(kv => (kv.Key, kv.Value));
        string weights = WriteTensors(Target(output, repo, "model.safetensors"), kept, dtype);
        var modelArgs = new JsonObject
        {
            ["patch_size"] = config.PatchSize, ["embed_dim"] = config.EmbedDim, ["depth"] = config.Depth, ["num_heads"] = config.NumHeads,
            ["mlp_ratio"] = config.MlpRatio, ["class_token"] = config.ClassToken, ["reg_tokens"] = config.RegTokens,
            ["no_embed_class"] = config.NoEmbedClass, ["init_values"] = config.InitValues, ["img_size"] = imageSize,
        };
        var json = new JsonObject
        {
            ["architecture"] = architecture,
            ["model_args"] = modelArgs,
            ["pretrained_cfg"] = new JsonObject
            {
                ["input_size"] = new JsonArray(3, imageSize, imageSize),
                ["mean"] = new JsonArray(normalization.Mean.Select(v => (JsonNode)(double)v).ToArray()),
                ["std"] = new JsonArray(normalization.Std.Select(v => (JsonNode)(double)v).ToArray()),
            },
        };
        File.WriteAllText(Target(output, repo, "config.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return weights;
    }

    private static string WriteTensors(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        SafetensorsWriter.Write(path, tensors.Select(t => (t.Name, t.Tensor.to(dtype))).ToList());
        return path;
    }

    private static BundleReport WriteManifest(string output, string modelId, ScalarType dtype, List<string> weights, long sourceBytes)
    {
        var entries = new JsonObject();
        var hashes = new List<string>();
        long bundleBytes = 0;
        foreach (var path in weights.OrderBy(p => p, StringComparer.Ordinal))
        {
            string hash;
            using (var stream = File.OpenRead(path))
            {
                hash = Convert.ToHexStringLower(SHA256.HashData(stream));
            }

            long length = new FileInfo(path).Length;
            bundleBytes += length;
            hashes.Add(hash);
            entries[Path.GetRelativePath(output, path).Replace('\\', '/')] = new JsonObject { ["bytes"] = length, ["sha256"] = hash };
        }

        string contentHash = Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.ASCII.GetBytes(string.Join("\n", hashes))));
        var manifest = new JsonObject
        {
            ["format"] = "cobra-bundle/1",
            ["model_id"] = modelId,
            ["dtype"] = dtype == ScalarType.BFloat16 ? "bf16" : "fp32",
            ["files"] = entries,
            ["source_weight_bytes"] = sourceBytes,
            ["bundle_weight_bytes"] = bundleBytes,
            ["content_sha256"] = contentHash,
        };
        File.WriteAllText(Path.Combine(output, "cobra-bundle.json"), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return new BundleReport(sourceBytes, bundleBytes, contentHash);
    }

    private static string Target(string output, string repo, string file)
    {
        string path = Path.Combine(output, repo, file);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return path;
    }
}
