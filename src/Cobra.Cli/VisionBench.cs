using System.Diagnostics;
using System.Text.Json.Nodes;
using Cobra.AI.Generation;
using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Modeling.Projection;
using Cobra.AI.Modeling.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra bench --part vision</c>: both towers at full size (384 px, DINOv2-L/14-reg4 + SigLIP-SO400M/14,
/// random weights) and the projector: ms per image; then time to first token for one 640x480 image plus a
/// question on the full-size model (towers + projector + Mamba-2.8B prefill in the engine's chunks + first token).
/// </summary>
internal static class VisionBench
{
    private const int ImageSize = RandomCobraModel.ImageSize;

    public static JsonObject Run(MambaConfig llmConfig, Precision precision, int questionTokens, JsonObject limits, TextWriter log)
    {
        var dtype = precision.ToScalarType();
        string name = precision == Precision.Float32 ? "fp32" : "bf16";
        var dinoConfig = VisionLoader.RealArchitecture(VisionTowerFiles.DinoArchitecture);
        var siglipConfig = VisionLoader.RealArchitecture(VisionTowerFiles.SigLipArchitecture);
        using var model = RandomCobraModel.Build(llmConfig, dtype);
        var llm = model.LanguageModel;
        long weightBytes = model.LanguageModel.parameters().Concat(model.Vision!.parameters()).Concat(model.Projector!.parameters()).Sum(p => p.NumberOfElements * p.ElementSize);
        double rssLoaded = BenchCommand.RssMiB();
        log.WriteLine($"[{name}] model built: {weightBytes / (double)(1L << 30):F2} GiB of weights, RSS {rssLoaded:F0} MiB (peak so far {BenchCommand.PeakRssMiB():F0} MiB)");

        var photo = RandomCobraModel.RandomPhoto(640, 480);
        double preprocessMs = Median(5, () => Prepare(photo).Dino.Dispose()) * 1e3;
        var (dinoPixels, siglipPixels) = Prepare(photo);
        using var noGrad = torch.no_grad();
        model.EncodeImage(dinoPixels, siglipPixels).Dispose();                   // warm-up
        double flops = TowerFlops(dinoConfig, ImageSize) + TowerFlops(siglipConfig, ImageSize) + ProjectorFlops(model.Vision!, model.Projector!);
        var encode = BenchCommand.AgainstPeak(3, () =>
        {
            using var scope = torch.NewDisposeScope();
            model.EncodeImage(dinoPixels, siglipPixels);
        }, flops, precision, limits);
        double gflops = encode.Gflops;
        double startPeak = BenchCommand.PeakGflops(limits, precision);
        log.WriteLine($"[{name}] vision: preprocess {preprocessMs:F0} ms, towers + projector {encode.Seconds * 1e3:F0} ms per 384px image ({flops / 1e12:F2} TFLOP: {gflops:F0} GFLOP/s = {encode.FractionOfPeak:P0} of the peak probed around each run, {encode.PeaksText()} GFLOP/s; {encode.FractionOfStartPeak:P0} of the {startPeak:F0} at the start)");

        log.WriteLine($"[{name}] after the towers: RSS {BenchCommand.RssMiB():F0} MiB, peak {BenchCommand.PeakRssMiB():F0} MiB");
        var question = torch.randint(2, 50000, [1, questionTokens]);
        int prefillChunk = new EngineSettings().PrefillChunkTokens;

        // The first token's compute floor: the towers, the projector and the prefill of every prompt position
        // (image tokens + question) at the peak; each run's floor at the peak probed around it.
        long promptPositions = model.Vision!.PatchTokens + questionTokens;
        double firstTokenFlops = flops + (promptPositions * BenchCommand.GemmFlopsPerToken(llm.Config));
        var firstToken = BenchCommand.AgainstPeak(3, () =>
        {
            using var scope = torch.NewDisposeScope();
            var (d, s) = Prepare(photo);
            var embeds = model.InputEmbeddings(model.EncodeImage(d, s), question); // [1,729+T,D]
            using var state = llm.NewState();
            Tensor logits = null!;
            for (long at = 0; at < embeds.shape[1]; at += prefillChunk)                  // in the engine's prefill chunks
            {
                logits = llm.Forward(embeds.narrow(1, at, Math.Min(prefillChunk, embeds.shape[1] - at)), state);
            }

            _ = logits.argmax(-1).item<long>();
        }, firstTokenFlops, precision, limits);
        double ttft = firstToken.Seconds;
        double ratioToFloor = 1 / firstToken.FractionOfPeak;                       // time over floor = peak over the rate reached
        double floorS = ttft / ratioToFloor;
        log.WriteLine($"[{name}] time to first token, 640x480 image + {questionTokens}-token question: {ttft:F2} s = {ratioToFloor:F3}x its compute floor ({floorS:F2} s: {promptPositions} prompt positions at the peak probed around each run, {firstToken.PeaksText()} GFLOP/s; {1 / firstToken.FractionOfStartPeak:F3}x at the start's peak); RSS {BenchCommand.RssMiB():F0} MiB, peak {BenchCommand.PeakRssMiB():F0} MiB");
        return new JsonObject
        {
            ["preprocess_ms"] = Math.Round(preprocessMs, 1),
            ["towers_and_projector_ms_per_image"] = Math.Round(encode.Seconds * 1e3, 1),
            ["vision"] = new JsonObject
            {
                ["gflops"] = Math.Round(gflops, 1),
                ["fraction_of_peak"] = Math.Round(encode.FractionOfPeak, 3),
                ["fraction_of_start_peak"] = Math.Round(encode.FractionOfStartPeak, 3),
                ["peak_gflops_around_runs"] = encode.PeaksJson(),
                ["tflop_per_image"] = Math.Round(flops / 1e12, 3),
            },
            ["time_to_first_token_s"] = Math.Round(ttft, 2),
            ["time_to_first_token_floor_s"] = Math.Round(floorS, 2),
            ["time_to_first_token_ratio_to_floor"] = Math.Round(ratioToFloor, 3),
            ["time_to_first_token_ratio_to_start_floor"] = Math.Round(1 / firstToken.FractionOfStartPeak, 3),
            ["time_to_first_token_peak_gflops_around_runs"] = firstToken.PeaksJson(),
            ["weight_gib"] = Math.Round(weightBytes / (double)(1L << 30), 2),
            ["rss_after_build_mib"] = Math.Round(rssLoaded, 0),
            ["question_tokens"] = questionTokens,
        };
    }

    /// <summary>Matmul FLOPs of one image through a tower up to its feature block (patch conv, qkv, attention, proj, MLP).</summary>
    internal static double TowerFlops(VitConfig c, int imageSize)
    {
        double g = imageSize / c.PatchSize, p = g * g, n = p + c.PrefixTokens, d = c.EmbedDim, h = c.MlpHidden;
        double block = (2 * n * d * 3 * d) + (2 * 2 * n * n * d) + (2 * n * d * d) + (2 * 2 * n * d * h);
        return (2 * p * 3 * c.PatchSize * c.PatchSize * d) + ((c.FeatureBlock + 1) * block);
    }

    private static double ProjectorFlops(DinoSigLipEncoder vision, Projector projector) =>
        2.0 * vision.PatchTokens * projector.parameters().Where(t => t.dim() == 2).Sum(t => (double)t.NumberOfElements);

    private static (Tensor Dino, Tensor SigLip) Prepare(RgbImage photo)
    {
        var resized = CobraImageTransform.Resize(photo, ImageSize, ResizeStrategy.ResizeNaive, TowerNormalization.Dino);
        return (CobraImageTransform.ToTensor(resized, TowerNormalization.Dino), CobraImageTransform.ToTensor(resized, TowerNormalization.SigLip));
    }

    private static double Median(int runs, Action action) => BenchCommand.Median(runs, action);
}
