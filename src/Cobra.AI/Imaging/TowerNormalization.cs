namespace Cobra.AI.Imaging;

/// <summary>Per-channel normalisation of one vision tower (timm pretrained config).</summary>
/// <param name="Mean">Per-channel mean, R, G, B.</param>
/// <param name="Std">Per-channel standard deviation, R, G, B.</param>
internal sealed record TowerNormalization(float[] Mean, float[] Std)
{
    /// <summary>DINOv2 (ImageNet statistics).</summary>
    public static TowerNormalization Dino { get; } = new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    /// <summary>SigLIP (maps [0, 1] to [−1, 1]).</summary>
    public static TowerNormalization SigLip { get; } = new([0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);
}
