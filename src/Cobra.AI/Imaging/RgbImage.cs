namespace Cobra.AI.Imaging;

/// <summary>
/// An 8-bit RGB image, the form every decoded input takes before preprocessing
/// (PIL's <c>convert('RGB')</c> result).
/// </summary>
/// <param name="Width">Width in pixels.</param>
/// <param name="Height">Height in pixels.</param>
/// <param name="Pixels">Interleaved R, G, B bytes, row-major (HWC); length is <c>Width * Height * 3</c>.</param>
internal sealed record RgbImage(int Width, int Height, byte[] Pixels)
{
    /// <summary>Creates a black image of the given size.</summary>
    public static RgbImage Blank(int width, int height) => new(width, height, new byte[checked(width * height * 3)]);

    /// <summary>Index of the red byte of pixel (x, y) in <see cref="Pixels"/>.</summary>
    public int IndexOf(int x, int y) => (y * Width + x) * 3;
}
