using Cobra.AI.Imaging;
using Xunit;

namespace Cobra.AI.Tests.Imaging;

/// <summary>Geometry of the resize strategies (spec §4.6) and the strategy names.</summary>
public sealed class CobraImageTransformTests
{
    [Theory]
    [InlineData("resize-naive", nameof(ResizeStrategy.ResizeNaive))]
    [InlineData("resize-crop", nameof(ResizeStrategy.ResizeCrop))]
    [InlineData("letterbox", nameof(ResizeStrategy.Letterbox))]
    public void Strategy_names_parse(string name, string expected)
    {
        // The enum is internal, so the theory carries its member name.
        Assert.Equal(expected, CobraImageTransform.ParseStrategy(name).ToString());
    }

    [Fact]
    public void Unknown_strategy_name_is_rejected()
    {
        var e = Assert.Throws<ArgumentException>(() => CobraImageTransform.ParseStrategy("stretch"));
        Assert.Contains("stretch", e.Message);
    }

    [Fact]
    public void Resize_naive_squashes_to_the_square()
    {
        var result = CobraImageTransform.Resize(Columns(30, 10), 8, ResizeStrategy.ResizeNaive, TowerNormalization.Dino);

        Assert.Equal((8, 8), (result.Width, result.Height));
    }

    /// <summary>
    /// 10×4 → shorter side 4 keeps it 10×4; the crop offset is round((10 − 4)/2) = 3, so columns 3..6 survive.
    /// 9×4 → offset round(2.5) = 2 under Python's half-to-even rounding.
    /// </summary>
    [Theory]
    [InlineData(10, 3)]
    [InlineData(9, 2)]
    [InlineData(11, 4)]
    public void Resize_crop_centres_with_half_to_even_offsets(int width, int expectedLeft)
    {
        var result = CobraImageTransform.Resize(Columns(width, 4), 4, ResizeStrategy.ResizeCrop, TowerNormalization.Dino);

        Assert.Equal((4, 4), (result.Width, result.Height));
        Assert.Equal(Enumerable.Range(expectedLeft, 4).Select(x => (byte)(x * 20)), Enumerable.Range(0, 4).Select(x => result.Pixels[result.IndexOf(x, 2)]));
    }

    [Fact]
    public void Resize_crop_truncates_the_long_side()
    {
        // Shorter side 3 → 2, long side int(2 · 7 / 3) = 4 before the crop; a constant image shows only the size.
        var tall = new RgbImage(3, 7, Enumerable.Repeat((byte)90, 3 * 7 * 3).ToArray());

        var result = CobraImageTransform.Resize(tall, 2, ResizeStrategy.ResizeCrop, TowerNormalization.SigLip);

        Assert.Equal((2, 2), (result.Width, result.Height));
        Assert.All(result.Pixels, v => Assert.Equal(90, v));
    }

    [Theory]
    [MemberData(nameof(Towers))]
    public void Letterbox_pads_with_the_tower_fill_before_cropping(string tower, byte[] fill)
    {
        var normalization = tower == "dino" ? TowerNormalization.Dino : TowerNormalization.SigLip;
        // 6 wide, 2 tall: 2 rows of fill above and below make it 6×6, already the target size.
        var band = new RgbImage(6, 2, Enumerable.Repeat((byte)7, 36).ToArray());

        var result = CobraImageTransform.Resize(band, 6, ResizeStrategy.Letterbox, normalization);

        Assert.Equal((6, 6), (result.Width, result.Height));
        Assert.Equal(fill, result.Pixels[result.IndexOf(0, 0)..(result.IndexOf(0, 0) + 3)]);
        Assert.Equal(fill, result.Pixels[result.IndexOf(5, 5)..(result.IndexOf(5, 5) + 3)]);
        Assert.Equal([7, 7, 7], result.Pixels[result.IndexOf(3, 2)..(result.IndexOf(3, 2) + 3)]);
    }

    public static TheoryData<string, byte[]> Towers => new()
    {
        { "dino", [123, 116, 103] },
        { "siglip", [127, 127, 127] },
    };

    [Fact]
    public void Letterbox_with_an_odd_difference_stays_one_pixel_short_then_crops()
    {
        // 5×2: pad int(3/2) = 1 row each side → 5×4 (not square); resize-crop to 4 then scales 4 rows to 4 rows
        // (height already 4) and 5 columns to int(4·5/4) = 5, so only the crop trims a column.
        var band = new RgbImage(5, 2, Enumerable.Repeat((byte)7, 30).ToArray());

        var result = CobraImageTransform.Resize(band, 4, ResizeStrategy.Letterbox, TowerNormalization.SigLip);

        Assert.Equal((4, 4), (result.Width, result.Height));
        Assert.Equal([127, 127, 127], result.Pixels[0..3]);
        Assert.Equal([7, 7, 7], result.Pixels[result.IndexOf(1, 1)..(result.IndexOf(1, 1) + 3)]);
        Assert.Equal([127, 127, 127], result.Pixels[result.IndexOf(1, 3)..(result.IndexOf(1, 3) + 3)]);
    }

    [Fact]
    public void To_tensor_subtracts_the_mean_then_divides_by_std()
    {
        Cobra.AI.Modeling.TorchRuntime.EnsureInitialized();
        var image = new RgbImage(1, 2, [0, 128, 255, 255, 0, 10]);

        using var tensor = CobraImageTransform.ToTensor(image, TowerNormalization.Dino);

        Assert.Equal(new long[] { 1, 3, 2, 1 }, tensor.shape);
        var values = tensor.data<float>().ToArray();
        Assert.Equal((0f / 255f - 0.485f) / 0.229f, values[0]);
        Assert.Equal((255f / 255f - 0.485f) / 0.229f, values[1]);
        Assert.Equal((128f / 255f - 0.456f) / 0.224f, values[2]);
        Assert.Equal((10f / 255f - 0.406f) / 0.225f, values[5]);
    }

    /// <summary>Each column x has level 20·x in all channels and rows, so crops are easy to read.</summary>
    private static RgbImage Columns(int width, int height)
    {
        var image = RgbImage.Blank(width, height);
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                image.Pixels.AsSpan(image.IndexOf(x, y), 3).Fill((byte)(x * 20));
            }
        }

        return image;
    }
}
