namespace Cobra.AI.Imaging;

/// <summary>How an image is brought to the tower's square input size (Cobra's <c>image_resize_strategy</c>).</summary>
internal enum ResizeStrategy
{
    /// <summary>Squash to S×S ignoring aspect ratio (<c>resize-naive</c>, used by <c>cobra+3b</c>).</summary>
    ResizeNaive,

    /// <summary>Shorter side to S, then centre crop (<c>resize-crop</c>).</summary>
    ResizeCrop,

    /// <summary>Pad to square with the tower's mean colour, then resize-crop (<c>letterbox</c>).</summary>
    Letterbox,
}
