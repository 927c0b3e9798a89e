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
/// The benches' model: Cobra at the real architecture (DINOv2-L/14-reg4 + SigLIP-SO400M/14 at 384 px, the fused
/// GELU-MLP projector, the given Mamba), random weights on the CPU, and a random photo to feed it.
/// </summary>
internal static class RandomCobraModel
{
    /// <summary>The towers' input size.</summary>
    public const int ImageSize = 384;

    /// <summary>Builds the model; <paramref name="withVision"/> false gives a text-only one.</summary>
    /// <param name="llmConfig">The language model's dimensions.</param>
    /// <param name="dtype">Weight dtype.</param>
    /// <param name="withVision">Build the towers and the projector.</param>
    /// <param name="withUnusedTail">Keep the tower blocks after Cobra's feature block (as an original checkpoint loads).</param>
    public static CobraModel Build(MambaConfig llmConfig, ScalarType dtype, bool withVision = true, bool withUnusedTail = true)
    {
        var llm = new MambaForCausalLM(llmConfig, dtype, torch.CPU);
        MambaRandomInit.Fill(llm, 4);
        if (!withVision)
        {
            return new CobraModel(null, null, llm);
        }

        var dinoConfig = VisionLoader.RealArchitecture(VisionTowerFiles.DinoArchitecture);
        var siglipConfig = VisionLoader.RealArchitecture(VisionTowerFiles.SigLipArchitecture);
        var dino = new VisionTransformer(dinoConfig, ImageSize / dinoConfig.PatchSize, dtype, torch.CPU, withUnusedTail);
        var siglip = new VisionTransformer(siglipConfig, ImageSize / siglipConfig.PatchSize, dtype, torch.CPU, withUnusedTail);
        MambaRandomInit.Fill(dino, 1);
        MambaRandomInit.Fill(siglip, 2);
        var vision = new DinoSigLipEncoder(dino, siglip);
        var projector = Projector.Create("no-align+fused-gelu-mlp", vision.FeatureWidth, llmConfig.DModel, dtype, torch.CPU);
        MambaRandomInit.Fill(projector, 3);
        return new CobraModel(vision, projector, llm);
    }

    /// <summary>A photo of random pixels (seed 7).</summary>
    public static RgbImage RandomPhoto(int width, int height)
    {
        var pixels = new byte[width * height * 3];
        new Random(7).NextBytes(pixels);
        return new RgbImage(width, height, pixels);
    }
}
