using Cobra.AI.Imaging;
using Xunit;

namespace Cobra.AI.Tests.Imaging;

/// <summary>Hand-checkable behaviour of the Pillow BICUBIC port; golden parity lives in <see cref="GoldenPreprocessingTests"/>.</summary>
public sealed class PilBicubicResizeTests
{
    [Fact]
    public void Same_size_returns_an_equal_copy()
    {
        var image = Gradient(5, 3);

        var result = PilBicubicResize.Resize(image, 5, 3);

        Assert.NotSame(image.Pixels, result.Pixels);
        Assert.Equal(image.Pixels, result.Pixels);
    }

    [Theory]
    [InlineData(9, 7, 4, 3)]
    [InlineData(3, 2, 11, 13)]
    [InlineData(10, 10, 10, 4)]
    public void Constant_image_stays_constant(int inW, int inH, int outW, int outH)
    {
        var image = new RgbImage(inW, inH, Enumerable.Range(0, inW * inH).SelectMany(_ => new byte[] { 10, 128, 250 }).ToArray());

        var result = PilBicubicResize.Resize(image, outW, outH);

        Assert.Equal((outW, outH), (result.Width, result.Height));
        for (int i = 0; i < result.Pixels.Length; i += 3)
        {
            Assert.Equal([10, 128, 250], result.Pixels[i..(i + 3)]);
        }
    }

    /// <summary>
    /// 2× downscale widens the kernel to 8 taps clipped to 4: weights K((j − 0.5)/2) normalised are
    /// a = 0.458678 (twice), b = 0.119835, c = −0.037190. A row 0,255,0,255 gives 255(a + c) = 107.48 → 107 and
    /// 255(a + b) = 147.52 → 148; the vertical pass over 107,148,107,148 gives 124.28 → 124 and 130.72 → 131.
    /// </summary>
    [Fact]
    public void Checkerboard_halves_to_the_hand_computed_levels()
    {
        var board = new RgbImage(4, 4, new byte[48]);
        for (int p = 0; p < 16; p++)
        {
            byte level = (byte)(((p % 4) + (p / 4)) % 2 == 1 ? 255 : 0);
            board.Pixels.AsSpan(p * 3, 3).Fill(level);
        }

        var result = PilBicubicResize.Resize(board, 2, 2);

        Assert.Equal(new byte[] { 124, 131, 131, 124 }, Enumerable.Range(0, 4).Select(p => result.Pixels[p * 3]).ToArray());
    }

    [Fact]
    public void Single_row_halves_to_the_hand_computed_levels()
    {
        var row = new RgbImage(4, 1, [0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255]);

        var result = PilBicubicResize.Resize(row, 2, 1);

        Assert.Equal(new byte[] { 107, 107, 107, 148, 148, 148 }, result.Pixels);
    }

    private static RgbImage Gradient(int width, int height) =>
        new(width, height, Enumerable.Range(0, width * height * 3).Select(i => (byte)(i * 7)).ToArray());
}
