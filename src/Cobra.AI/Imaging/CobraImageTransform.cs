using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Imaging;

/// <summary>
/// Cobra's per-tower image transform (spec §4): resize by strategy with Pillow bicubic, then
/// torchvision <c>ToTensor</c> and <c>Normalize</c>.
/// </summary>
internal static class CobraImageTransform
{
    /// <summary>Parses Cobra's <c>image_resize_strategy</c> name.</summary>
    /// <exception cref="ArgumentException">The name is not one of resize-naive, resize-crop, letterbox.</exception>
    public static ResizeStrategy ParseStrategy(string name) => name switch
    {
        "resize-naive" => ResizeStrategy.ResizeNaive,
        "resize-crop" => ResizeStrategy.ResizeCrop,
        "letterbox" => ResizeStrategy.Letterbox,
        _ => throw new ArgumentException(
            $"Unknown image resize strategy '{name}'; expected resize-naive, resize-crop or letterbox.", nameof(name)),
    };

    /// <summary>
    /// The uint8 image a tower sees after resizing, cropping and padding to <paramref name="size"/>².
    /// Only letterbox depends on <paramref name="tower"/> (its fill colour is the tower mean).
    /// </summary>
    public static RgbImage Resize(RgbImage image, int size, ResizeStrategy strategy, TowerNormalization tower)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(tower);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        return strategy switch
        {
            // CenterCrop(S) after Resize((S, S)) is a no-op.
            ResizeStrategy.ResizeNaive => PilBicubicResize.Resize(image, size, size),
            ResizeStrategy.ResizeCrop => ResizeShorterSideThenCrop(image, size),
            ResizeStrategy.Letterbox => ResizeShorterSideThenCrop(LetterboxPad(image, tower), size),
            _ => throw new ArgumentOutOfRangeException(nameof(strategy), strategy, "Unknown resize strategy."),
        };
    }

    /// <summary>
    /// float32 [1, 3, S, S]: <c>x / 255</c>, then <c>(x − mean) / std</c> per channel, in float32 and in
    /// torchvision's order (subtract, then divide; multiplying by 1/std can differ in the last ulp).
    /// </summary>
    public static Tensor ToTensor(RgbImage resized, TowerNormalization tower)
    {
        ArgumentNullException.ThrowIfNull(resized);
        ArgumentNullException.ThrowIfNull(tower);
        int plane = resized.Width * resized.Height;
        var values = new float[3 * plane];
        for (int c = 0; c < 3; c++)
        {
            float mean = tower.Mean[c], std = tower.Std[c];
            for (int p = 0; p < plane; p++)
            {
                float x = resized.Pixels[p * 3 + c] / 255f;
                values[c * plane + p] = (x - mean) / std;
            }
        }

        return torch.tensor(values, [1, 3, resized.Height, resized.Width], ScalarType.Float32);
    }

    /// <summary>
    /// torchvision <c>Resize(S)</c> then <c>CenterCrop(S)</c>: the shorter side becomes S and the longer
    /// int(S·long/short), truncated.
    /// </summary>
    private static RgbImage ResizeShorterSideThenCrop(RgbImage image, int size)
    {
        int width, height;
        if (image.Width <= image.Height)
        {
            width = size;
            height = (int)((long)size * image.Height / image.Width);
        }
        else
        {
            height = size;
            width = (int)((long)size * image.Width / image.Height);
        }

        return CenterCrop(PilBicubicResize.Resize(image, width, height), size);
    }

    /// <summary>torchvision <c>CenterCrop</c>: offsets int(round((H − S) / 2)) with Python's half-to-even rounding.</summary>
    private static RgbImage CenterCrop(RgbImage image, int size)
    {
        int top = (int)Math.Round((image.Height - size) / 2.0, MidpointRounding.ToEven);
        int left = (int)Math.Round((image.Width - size) / 2.0, MidpointRounding.ToEven);
        var output = RgbImage.Blank(size, size);
        for (int y = 0; y < size; y++)
        {
            image.Pixels.AsSpan(image.IndexOf(left, y + top), size * 3).CopyTo(output.Pixels.AsSpan(output.IndexOf(0, y)));
        }

        return output;
    }

    /// <summary>
    /// Cobra's <c>LetterboxPad</c>: int((max − w) / 2) on left and right, int((max − h) / 2) on top and bottom
    /// (an odd difference leaves the result one pixel short of square), filled with int(mean·255) per channel.
    /// </summary>
    private static RgbImage LetterboxPad(RgbImage image, TowerNormalization tower)
    {
        int max = Math.Max(image.Width, image.Height);
        int padX = (max - image.Width) / 2, padY = (max - image.Height) / 2;
        var output = RgbImage.Blank(image.Width + 2 * padX, image.Height + 2 * padY);
        Span<byte> fill = [FillLevel(tower.Mean[0]), FillLevel(tower.Mean[1]), FillLevel(tower.Mean[2])];
        for (int i = 0; i < output.Pixels.Length; i += 3)
        {
            fill.CopyTo(output.Pixels.AsSpan(i));
        }

        for (int y = 0; y < image.Height; y++)
        {
            image.Pixels.AsSpan(image.IndexOf(0, y), image.Width * 3).CopyTo(output.Pixels.AsSpan(output.IndexOf(padX, y + padY)));
        }

        return output;
    }

    // Python computes int(m * 255) on doubles; the widening keeps 0.485f·255 = 123.67… → 123.
    private static byte FillLevel(float mean) => (byte)(int)((double)mean * 255);
}
