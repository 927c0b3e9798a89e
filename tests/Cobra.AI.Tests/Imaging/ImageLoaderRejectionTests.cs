using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Cobra.AI.Imaging;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;
using Xunit;

namespace Cobra.AI.Tests.Imaging;

/// <summary>
/// Bad inputs are refused with an <see cref="InvalidDataException"/> that names the source and the problem;
/// inputs over a limit with a <see cref="CobraImageLimitException"/> naming the option.
/// </summary>
public sealed class ImageLoaderRejectionTests
{
    private const string Source = "upload-42";

    [Fact]
    public void Empty_input_is_rejected()
    {
        AssertRejected([], "empty");
    }

    [Fact]
    public void Input_over_the_byte_limit_is_rejected_with_the_limit()
    {
        var e = Assert.Throws<CobraImageLimitException>(() =>
            ImageLoader.Load(new byte[101], new ImageLimits { MaxBytes = 100 }, sourceName: Source));

        Assert.Equal("MaxImageBytes", e.LimitName);
        Assert.Contains(Source, e.Message);
        Assert.Contains("101 bytes exceeds the limit of 100 bytes", e.Message);
    }

    [Fact]
    public void Text_is_not_an_image()
    {
        var e = AssertRejected(Encoding.UTF8.GetBytes("hello, this is not a picture"), "unknown or unsupported image format", "text/plain");
        Assert.Contains("text/plain", e.Message);
    }

    [Fact]
    public void Svg_is_named_as_unsupported()
    {
        const string svg = "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\"/></svg>";
        AssertRejected(Encoding.UTF8.GetBytes(svg), "SVG is not supported", "image/svg+xml");
    }

    public static TheoryData<string> TruncatableFormats => ["png", "jpeg", "gif", "webp"];

    [Theory]
    [MemberData(nameof(TruncatableFormats))]
    public void Truncated_data_is_rejected(string kind)
    {
        using var source = TestImages.Pattern(64, 64);
        IImageEncoder encoder = kind switch
        {
            "png" => new PngEncoder(),
            "jpeg" => new JpegEncoder(),
            "gif" => new GifEncoder(),
            "webp" => new WebpEncoder(),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        var whole = TestImages.Encode(source, encoder);
        TestImages.Load(whole);

        AssertRejected(whole[..(whole.Length / 2)], "truncated or corrupt");
    }

    [Fact]
    public void Jpeg_padded_with_zeros_after_its_end_marker_is_accepted()
    {
        using var source = TestImages.Pattern(8, 8);
        var jpeg = TestImages.Encode(source, new JpegEncoder());

        var image = TestImages.Load([.. jpeg, 0, 0, 0, 0]);

        Assert.Equal((8, 8), (image.Width, image.Height));
    }

    [Fact]
    public void Png_header_claiming_too_many_pixels_is_rejected_before_decoding()
    {
        var bomb = PngWithHeader(20000, 20000);
        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        var clock = Stopwatch.StartNew();

        var e = Assert.Throws<CobraImageLimitException>(() => ImageLoader.Load(bomb, new ImageLimits(), sourceName: Source));

        Assert.True(clock.ElapsedMilliseconds < 2000, $"took {clock.ElapsedMilliseconds} ms");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - allocatedBefore < 16 << 20, "nothing near the image size may be allocated");
        Assert.Equal("MaxImagePixels", e.LimitName);
        Assert.Contains("20000x20000", e.Message);
        Assert.Contains("exceeds the limit of 25000000 pixels", e.Message);
    }

    [Fact]
    public void Zero_sized_image_is_rejected()
    {
        var e = Assert.Throws<InvalidDataException>(() => ImageLoader.Load(PngWithHeader(0, 10), new ImageLimits(), sourceName: Source));

        Assert.Contains(Source, e.Message);
        Assert.Contains("zero-sized (0x10)", e.Message);
    }

    [Fact]
    public void Missing_file_names_the_path()
    {
        string path = Path.Combine(Path.GetTempPath(), "cobra-no-such-dir", "missing.png");

        var e = Assert.Throws<FileNotFoundException>(() => ImageLoader.LoadFile(path, new ImageLimits()));

        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Oversized_file_names_the_path_and_the_limit()
    {
        string path = Path.Combine(Path.GetTempPath(), $"cobra-imaging-{Guid.NewGuid():N}.png");
        File.WriteAllBytes(path, new byte[5000]);
        try
        {
            var e = Assert.Throws<CobraImageLimitException>(() => ImageLoader.LoadFile(path, new ImageLimits { MaxBytes = 1000 }));

            Assert.Contains(path, e.Message);
            Assert.Contains("1001 bytes exceeds the limit of 1000 bytes", e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static InvalidDataException AssertRejected(byte[] data, string problem, string? declaredMediaType = null)
    {
        var e = Assert.Throws<InvalidDataException>(() => ImageLoader.Load(data, new ImageLimits(), declaredMediaType, Source));
        Assert.Contains(Source, e.Message);
        Assert.Contains(problem, e.Message);
        return e;
    }

    /// <summary>A structurally valid PNG (signature, IHDR, one empty IDAT, IEND) whose header claims any size.</summary>
    private static byte[] PngWithHeader(int width, int height)
    {
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8; // bit depth
        ihdr[9] = 2; // colour type RGB
        byte[] emptyZlib = [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];
        return [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A, .. Chunk("IHDR", ihdr), .. Chunk("IDAT", emptyZlib), .. Chunk("IEND", [])];
    }

    private static byte[] Chunk(string type, byte[] payload)
    {
        var chunk = new byte[12 + payload.Length];
        BinaryPrimitives.WriteInt32BigEndian(chunk, payload.Length);
        Encoding.ASCII.GetBytes(type).CopyTo(chunk, 4);
        payload.CopyTo(chunk, 8);
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(8 + payload.Length), Crc32(chunk.AsSpan(4, 4 + payload.Length)));
        return chunk;
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
            }
        }

        return ~crc;
    }
}
