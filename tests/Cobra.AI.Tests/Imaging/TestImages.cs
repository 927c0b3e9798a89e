using Cobra.AI.Imaging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace Cobra.AI.Tests.Imaging;

/// <summary>Small synthetic images and their encodings, built with ImageSharp so no binary fixtures are needed.</summary>
internal static class TestImages
{
    private static readonly byte[] AlphaLevels = [0, 128, 255];

    /// <summary>An image whose every pixel differs, with alpha cycling through 0, 128 and 255.</summary>
    public static Image<Rgba32> Pattern(int width, int height, bool withAlpha = false)
    {
        var image = new Image<Rgba32>(width, height);
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                byte alpha = withAlpha ? AlphaLevels[(x + y) % 3] : (byte)255;
                image[x, y] = new Rgba32((byte)(x * 37 + y * 11), (byte)(x * 5 + y * 53), (byte)(255 - x * 17 - y * 7), alpha);
            }
        }

        return image;
    }

    /// <summary>Splits an image into horizontal bands of a few flat colours, which palette and lossy encoders keep.</summary>
    public static Image<Rgba32> Bands(int width, int height, params Rgba32[] colours)
    {
        var image = new Image<Rgba32>(width, height);
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                image[x, y] = colours[y * colours.Length / height];
            }
        }

        return image;
    }

    public static byte[] Encode(Image image, IImageEncoder encoder)
    {
        using var stream = new MemoryStream();
        image.Save(stream, encoder);
        return stream.ToArray();
    }

    /// <summary>The RGB bytes PIL's convert('RGB') would give: alpha dropped, colour kept as stored.</summary>
    public static byte[] Rgb(Image<Rgba32> image)
    {
        var rgb = new byte[image.Width * image.Height * 3];
        for (int y = 0; y < image.Height; y++)
        {
            for (int x = 0; x < image.Width; x++)
            {
                var p = image[x, y];
                int i = (y * image.Width + x) * 3;
                (rgb[i], rgb[i + 1], rgb[i + 2]) = (p.R, p.G, p.B);
            }
        }

        return rgb;
    }

    public static int MaxDifference(byte[] expected, byte[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        int max = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            max = Math.Max(max, Math.Abs(expected[i] - actual[i]));
        }

        return max;
    }

    public static RgbImage Load(byte[] data, string sourceName = "test-image") =>
        ImageLoader.Load(data, new ImageLimits(), sourceName: sourceName);
}
