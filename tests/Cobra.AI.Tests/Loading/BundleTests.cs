using System.Text.Json;
using Cobra.AI.Loading;
using Cobra.Cli;
using Xunit;

namespace Cobra.AI.Tests.Loading;

/// <summary><c>cobra convert</c>: the bundle loads like a hub folder and gives the same outputs as the original files.</summary>
public sealed class BundleTests : IDisposable
{
    private readonly string scratch = Directory.CreateTempSubdirectory("cobra-bundle-").FullName;

    private static Task<(int Exit, string Out, string Err)> Run(params string[] args) => CliRunner.RunAsync(args);

    [Fact]
    public async Task An_fp32_bundle_reproduces_the_original_ids_and_logits_with_less_data()
    {
        string bundle = Path.Combine(scratch, "fp32");
        var convert = await Run("convert", "--model-dir", Golden.TinyAHub, "--output", bundle, "--precision", "fp32");
        Assert.True(convert.Exit == 0, convert.Err);

        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(bundle, "cobra-bundle.json")));
        Assert.Equal(64, manifest.RootElement.GetProperty("content_sha256").GetString()!.Length);
        Assert.True(manifest.RootElement.GetProperty("bundle_weight_bytes").GetInt64() < manifest.RootElement.GetProperty("source_weight_bytes").GetInt64());
        using (var dino = SafetensorsFile.Open(Path.Combine(bundle, VisionTowerFiles.DinoRepo, "model.safetensors")))
        {
            Assert.Equal(new long[] { 1, 16, 32 }, dino.GetInfo("pos_embed").Shape);                 // already at the run grid
            Assert.DoesNotContain(dino.Keys, k => k.StartsWith("blocks.2.", StringComparison.Ordinal) || k.StartsWith("norm.", StringComparison.Ordinal));
        }

        foreach (var (image, question) in new[] { ("scene_100x70.png", "What is going on in this image?"), ("badge_64x64_rgba.png", "<image>\nIs there a red circle? Answer Yes or No.") })
        {
            string[] tail = ["--image", Golden.Fixtures("tiny-a", "images", image), "--prompt", question, "--max-new-tokens", "16", "--json"];
            string originalLogits = Path.Combine(scratch, "original.safetensors"), bundleLogits = Path.Combine(scratch, "bundle.safetensors");
            var original = await Run(["generate", "--model-dir", Golden.TinyAHub, "--logits-out", originalLogits, .. tail]);
            var fromBundle = await Run(["generate", "--model-dir", bundle, "--logits-out", bundleLogits, .. tail]);
            Assert.True(fromBundle.Exit == 0, fromBundle.Err);
            static string Ids(string json) => JsonDocument.Parse(json).RootElement.GetProperty("output_token_ids").GetRawText();
            Assert.Equal(Ids(original.Out), Ids(fromBundle.Out));
            using var a = SafetensorsFile.Open(originalLogits);
            using var b = SafetensorsFile.Open(bundleLogits);
            Golden.AssertClose(a.Read("step_logits"), b.Read("step_logits"), "bundle step logits", tolerance: 1e-5);
        }
    }

    [Fact]
    public async Task A_bf16_bundle_is_half_the_size_and_runs()
    {
        string bundle = Path.Combine(scratch, "bf16");
        Assert.Equal(0, (await Run("convert", "--model-dir", Golden.TinyAHub, "--output", bundle)).Exit);
        using (var checkpoint = SafetensorsFile.Open(Path.Combine(bundle, CobraModelFiles.CobraRepo, "cobra+3b", "checkpoints", "latest-checkpoint.safetensors")))
        {
            Assert.Equal(TorchSharp.torch.ScalarType.BFloat16, checkpoint.GetInfo("llm_backbone.llm.backbone.embedding.weight").DType);
            Assert.DoesNotContain("llm_backbone.llm.lm_head.weight", checkpoint.Keys);
        }

        var (exit, output, error) = await Run("generate", "--model-dir", bundle, "--image", Golden.Fixtures("tiny-a", "images", "scene_100x70.png"), "--prompt", "What is this?", "--max-new-tokens", "4", "--json", "--precision", "bf16");
        Assert.True(exit == 0, error);
        Assert.Equal(4, JsonDocument.Parse(output).RootElement.GetProperty("output_token_ids").GetArrayLength());
    }

    public void Dispose() => Directory.Delete(scratch, recursive: true);
}
