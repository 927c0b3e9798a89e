using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Vision;

/// <summary>
/// Cobra's fused vision backbone (<c>dinosiglip-vit-so-384px</c>): DINOv2 and SigLIP see the same image
/// (each normalised its own way); their patch features are concatenated on channels, [DINO | SigLIP].
/// </summary>
internal sealed class DinoSigLipEncoder : nn.Module
{
#pragma warning disable IDE1006 // field names are the checkpoint prefixes
    private readonly VisionTransformer dino;
    private readonly VisionTransformer siglip;
#pragma warning restore IDE1006

    /// <summary>Wraps two towers with the same run grid.</summary>
    public DinoSigLipEncoder(VisionTransformer dino, VisionTransformer siglip)
        : base(nameof(DinoSigLipEncoder))
    {
        if (dino.GridSize != siglip.GridSize)
        {
            throw new ArgumentException($"Tower grids differ: DINO {dino.GridSize}², SigLIP {siglip.GridSize}².");
        }

        this.dino = dino;
        this.siglip = siglip;
        RegisterComponents();
    }

    /// <summary>The DINOv2 tower.</summary>
    public VisionTransformer Dino => dino;

    /// <summary>The SigLIP tower.</summary>
    public VisionTransformer SigLip => siglip;

    /// <summary>Patch tokens per image.</summary>
    public int PatchTokens => dino.GridSize * dino.GridSize;

    /// <summary>Fused feature width (DINO + SigLIP).</summary>
    public int FeatureWidth => dino.Config.EmbedDim + siglip.Config.EmbedDim;

    /// <summary>[B, P, D_dino + D_siglip] from the two towers' pixel tensors [B, 3, S, S].</summary>
    public Tensor Forward(Tensor dinoPixels, Tensor siglipPixels, Action<string, Tensor>? trace)
    {
        var dinoFeatures = dino.Forward(dinoPixels, "vision.dino", trace);       // [B,P,Dd]
        var siglipFeatures = siglip.Forward(siglipPixels, "vision.siglip", trace); // [B,P,Ds]
        var fused = torch.cat([dinoFeatures, siglipFeatures], 2);                // [B,P,Dd+Ds]
        trace?.Invoke("vision.fused_patch_features", fused);
        return fused;
    }
}
