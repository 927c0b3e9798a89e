using Cobra.AI.Imaging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Tiff;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing.Processors.Quantization;
using Xunit;

namespace Cobra.AI.Tests.Imaging;

/// <summary>Every supported container decodes to the pixels PIL's convert('RGB') would give.</summary>
public sealed class ImageLoaderFormatTests
{
    private static readonly Rgba32[] Flat = [new(200, 30, 40), new(20, 180, 60), new(30, 40, 220), new(250, 250, 250)];

    public static TheoryData<string> LosslessEncoders => ["png-rgb", "png-rgba", "png-16bit", "bmp", "webp-lossless", "tiff"];

    [Theory]
    [MemberData(nameof(LosslessEncoders))]
    public void Lossless_formats_decode_exactly(string kind)
    {
        using var source = TestImages.Pattern(7, 5, withAlpha: kind is "png-rgba" or "webp-lossless");
        var encoder = kind switch
        {
            "png-rgb" => new PngEncoder { ColorType = PngColorType.Rgb },
            "png-rgba" => new PngEncoder { ColorType = PngColorType.RgbWithAlpha },
            "png-16bit" => new PngEncoder { ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit16 },
            "bmp" => new BmpEncoder { BitsPerPixel = BmpBitsPerPixel.Pixel24 },
            "webp-lossless" => new WebpEncoder { FileFormat = WebpFileFormatType.Lossless, Quality = 100, TransparentColorMode = WebpTransparentColorMode.Preserve },
            "tiff" => (SixLabors.ImageSharp.Formats.IImageEncoder)new TiffEncoder(),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };

        var image = TestImages.Load(TestImages.Encode(source, encoder));

        Assert.Equal((7, 5), (image.Width, image.Height));
        Assert.Equal(TestImages.Rgb(source), image.Pixels);
    }

    [Fact]
    public void Grayscale_png_is_replicated_to_three_channels()
    {
        using var source = new Image<L8>(6, 4);
        for (int i = 0; i < 24; i++)
        {
            source[i % 6, i / 6] = new L8((byte)(i * 10));
        }

        var image = TestImages.Load(TestImages.Encode(source, new PngEncoder { ColorType = PngColorType.Grayscale }));

        for (int i = 0; i < 24; i++)
        {
            Assert.Equal([(byte)(i * 10), (byte)(i * 10), (byte)(i * 10)], image.Pixels.AsSpan(i * 3, 3).ToArray());
        }
    }

    [Fact]
    public void Palette_png_is_looked_up()
    {
        using var source = TestImages.Bands(5, 8, Flat);
        var encoder = new PngEncoder { ColorType = PngColorType.Palette, Quantizer = ExactPalette() };
        var bytes = TestImages.Encode(source, encoder);

        Assert.Equal(PngColorType.Palette, Image.Identify(bytes).Metadata.GetPngMetadata().ColorType);
        Assert.Equal(TestImages.Rgb(source), TestImages.Load(bytes).Pixels);
    }

    [Fact]
    public void Animated_gif_uses_its_first_frame()
    {
        using var animation = TestImages.Bands(4, 4, Flat[0], Flat[1]);
        using var second = TestImages.Bands(4, 4, Flat[2], Flat[3]);
        animation.Frames.AddFrame(second.Frames.RootFrame);
        var bytes = TestImages.Encode(animation, new GifEncoder { Quantizer = ExactPalette() });

        var image = TestImages.Load(bytes);

        using var first = TestImages.Bands(4, 4, Flat[0], Flat[1]);
        Assert.Equal(TestImages.Rgb(first), image.Pixels);
        // The loader's first-frame setting must stay private to it.
        using var everyFrame = Image.Load<Rgba32>(bytes);
        Assert.Equal(2, everyFrame.Frames.Count);
    }

    [Theory]
    [InlineData("jpeg")]
    [InlineData("webp-lossy")]
    public void Lossy_formats_decode_close_to_the_source(string kind)
    {
        using var source = TestImages.Bands(32, 32, Flat);
        SixLabors.ImageSharp.Formats.IImageEncoder encoder = kind == "jpeg"
            ? new JpegEncoder { Quality = 95 }
            : new WebpEncoder { FileFormat = WebpFileFormatType.Lossy, Quality = 95 };

        var image = TestImages.Load(TestImages.Encode(source, encoder));

        // Chroma subsampling smears the band edges, so compare the middle row of each 8-row band.
        var expected = TestImages.Rgb(source);
        foreach (int y in new[] { 4, 12, 20, 28 })
        {
            var span = new Range(y * 32 * 3, (y + 1) * 32 * 3);
            Assert.InRange(TestImages.MaxDifference(expected[span], image.Pixels[span]), 0, 12);
        }
    }

    [Fact]
    public void Progressive_jpeg_decodes()
    {
        var image = ImageLoader.LoadFile(Golden.Fixtures("imaging", "progressive_256x160.jpg"), new ImageLimits());

        Assert.Equal((256, 160), (image.Width, image.Height));
        Assert.True(image.Pixels.Distinct().Count() > 50, "a real photo has many levels");
    }

    [Fact]
    public void Cmyk_jpeg_is_converted_to_rgb()
    {
        var image = ImageLoader.LoadFile(Golden.Fixtures("imaging", "cmyk_100x100.jpg"), new ImageLimits());

        Assert.Equal((100, 100), (image.Width, image.Height));
        var topLeft = image.Pixels.AsSpan(image.IndexOf(0, 0), 3).ToArray();
        var bottomRight = image.Pixels.AsSpan(image.IndexOf(99, 99), 3).ToArray();
        Assert.True(topLeft[0] > 200 && topLeft[1] < 60 && topLeft[2] < 60, $"top-left should be red, got {string.Join(",", topLeft)}");
        Assert.True(bottomRight.All(v => v < 60), $"bottom-right should be black, got {string.Join(",", bottomRight)}");
    }

    [Fact]
    public void Alpha_is_dropped_not_composited()
    {
        var image = ImageLoader.LoadFile(Golden.Fixtures("tiny-a", "images", "badge_64x64_rgba.png"), new ImageLimits());
        using var raw = Image.Load<Rgba32>(Golden.Fixtures("tiny-a", "images", "badge_64x64_rgba.png"));

        Assert.Equal(0, raw[10, 5].A);
        Assert.True(TestImages.Rgb(raw).Take(64 * 16 * 3).Any(v => v != 0), "the transparent quarter must be coloured for this test to mean anything");
        Assert.Equal(TestImages.Rgb(raw), image.Pixels);
    }

    [Fact]
    public void Declared_media_type_is_only_a_hint()
    {
        using var source = TestImages.Pattern(3, 3);
        var png = TestImages.Encode(source, new PngEncoder());

        var image = ImageLoader.Load(png, new ImageLimits(), declaredMediaType: "image/jpeg", sourceName: "upload");

        Assert.Equal(TestImages.Rgb(source), image.Pixels);
    }

    [Fact]
    public void Exif_orientation_is_ignored_by_default_and_applied_on_request()
    {
        using var source = TestImages.Bands(8, 4, Flat[0], Flat[2]);
        source.Metadata.ExifProfile = new ExifProfile();
        source.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
        var jpeg = TestImages.Encode(source, new JpegEncoder { Quality = 95 });

        var stored = ImageLoader.Load(jpeg, new ImageLimits());
        var oriented = ImageLoader.Load(jpeg, new ImageLimits { ApplyExifOrientation = true });

        Assert.Equal((8, 4), (stored.Width, stored.Height));
        Assert.Equal((4, 8), (oriented.Width, oriented.Height));
        // Orientation 6 rotates 90° clockwise: the red top band becomes the right-hand columns.
        Assert.True(oriented.Pixels[oriented.IndexOf(3, 4)] > 150, "right column should be red");
        Assert.True(oriented.Pixels[oriented.IndexOf(0, 4)] < 100, "left column should be blue");
    }

    private static PaletteQuantizer ExactPalette() =>
        new(Flat.Select(c => (Color)c).ToArray(), new QuantizerOptions { Dither = null });
}
