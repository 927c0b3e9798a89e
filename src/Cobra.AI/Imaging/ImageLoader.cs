using System.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Tiff;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.Metadata;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace Cobra.AI.Imaging;

/// <summary>
/// Decodes untrusted image bytes into <see cref="RgbImage"/> with PIL <c>convert('RGB')</c> semantics
/// (alpha dropped, not composited; grey replicated; palette looked up), enforcing <see cref="ImageLimits"/>
/// before any pixel buffer is allocated. Every rejection is an <see cref="InvalidDataException"/> naming the
/// source and the problem.
/// </summary>
internal static class ImageLoader
{
    private const long MinAllocationLimitBytes = 64L * 1024 * 1024;

    /// <summary>Decodes an encoded image. The format is detected from the bytes; <paramref name="declaredMediaType"/> only enriches error messages.</summary>
    /// <exception cref="CobraImageLimitException">The data is over <see cref="ImageLimits.MaxBytes"/> or the image over <see cref="ImageLimits.MaxPixels"/>.</exception>
    /// <exception cref="InvalidDataException">The data is empty, not a supported image, or corrupt.</exception>
    public static RgbImage Load(ReadOnlySpan<byte> data, ImageLimits limits, string? declaredMediaType = null, string? sourceName = null) =>
        Decode(Inspect(data.ToArray(), limits, declaredMediaType, sourceName));

    /// <summary>
    /// Everything <see cref="Load"/> checks before it allocates pixels: size, format, structure, header and
    /// dimensions. The result tells how much memory decoding will take, so a caller can wait for room first.
    /// </summary>
    /// <exception cref="CobraImageLimitException">Over a limit.</exception>
    /// <exception cref="InvalidDataException">Empty, unsupported or corrupt.</exception>
    public static InspectedImage Inspect(byte[] bytes, ImageLimits limits, string? declaredMediaType = null, string? sourceName = null)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        ArgumentNullException.ThrowIfNull(limits);
        string source = sourceName ?? "image";
        if (bytes.Length == 0)
        {
            throw Invalid(source, "the data is empty (0 bytes)");
        }

        if (bytes.Length > limits.MaxBytes)
        {
            throw OverLimit(source, $"{bytes.Length} bytes exceeds the limit of {limits.MaxBytes} bytes", ImageLimits.MaxBytesName);
        }

        var configuration = CreateConfiguration(limits);
        var format = Image.DetectFormat(configuration, bytes)
            ?? throw Invalid(source, DescribeUnknownFormat(bytes, declaredMediaType));

        string? truncation = ImageStructure.FindTruncation(format, bytes);
        if (truncation is not null)
        {
            throw Invalid(source, $"truncated or corrupt {format.Name} data: {truncation}");
        }

        var info = Guard(source, format, () => Image.Identify(configuration, new MemoryStream(bytes, writable: false)))
            ?? throw Invalid(source, $"the {format.Name} header could not be read");
        CheckDimensions(source, info, limits);
        return new InspectedImage(bytes, source, limits, configuration, format, info);
    }

    /// <summary>Decodes an inspected image to RGB.</summary>
    /// <exception cref="CobraImageLimitException">Decoding needs more memory than the pixel limit justifies (a bomb).</exception>
    /// <exception cref="InvalidDataException">The data is corrupt.</exception>
    public static RgbImage Decode(InspectedImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        return Guard(image.Source, image.Format, () => Decode(image.Configuration, image.Bytes, image.Info, image.Limits.ApplyExifOrientation));
    }

    /// <summary>Reads and decodes an image file, reading at most <see cref="ImageLimits.MaxBytes"/> + 1 bytes.</summary>
    /// <exception cref="FileNotFoundException">The file (or its directory) does not exist.</exception>
    /// <exception cref="InvalidDataException">As for <see cref="Load"/>; the message names <paramref name="path"/>.</exception>
    /// <exception cref="CobraImageLimitException">As for <see cref="Load"/>.</exception>
    public static RgbImage LoadFile(string path, ImageLimits limits)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(limits);
        byte[] bytes;
        try
        {
            bytes = ReadBounded(path, Math.Min(limits.MaxBytes, Array.MaxLength - 1) + 1);
        }
        catch (DirectoryNotFoundException e)
        {
            throw new FileNotFoundException($"Image file not found: {path}", path, e);
        }
        catch (FileNotFoundException e)
        {
            throw new FileNotFoundException($"Image file not found: {path}", path, e);
        }

        return Load(bytes, limits, sourceName: path);
    }

    // Reading one byte past the limit lets Load report "too large" without pulling a huge file into memory.
    private static byte[] ReadBounded(string path, long maxBytes)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while (buffer.Length < maxBytes && (read = stream.Read(chunk, 0, (int)Math.Min(chunk.Length, maxBytes - buffer.Length))) > 0)
        {
            buffer.Write(chunk, 0, read);
        }

        return buffer.ToArray();
    }

    /// <summary>
    /// A private configuration with only the formats we accept. GIFs and TIFFs decode only their first frame
    /// (what PIL's <c>convert</c> uses), and the allocator refuses any buffer beyond what <see cref="ImageLimits.MaxPixels"/>
    /// can justify, which stops decompression bombs that lie about their size in places <c>Identify</c> does not
    /// see. It is built from modules rather than cloned because <c>Configuration.Clone</c> shares the format
    /// manager, so setting the GIF decoder on a clone would change it for the whole process.
    /// </summary>
    private static Configuration CreateConfiguration(ImageLimits limits)
    {
        var configuration = new Configuration(
            new PngConfigurationModule(), new JpegConfigurationModule(), new GifConfigurationModule(),
            new BmpConfigurationModule(), new WebpConfigurationModule(), new TiffConfigurationModule());
        configuration.ImageFormatsManager.SetDecoder(GifFormat.Instance, new GifDecoder { DecodingMode = FrameDecodingMode.First });
        // PIL also reads the first page of a multi-page TIFF, and the pixel limit only vouches for that page.
        configuration.ImageFormatsManager.SetDecoder(TiffFormat.Instance, new TiffDecoder { DecodingMode = FrameDecodingMode.First });
        long limitBytes = Math.Max(Math.Min(limits.MaxPixels, long.MaxValue / 8) * 8, MinAllocationLimitBytes);
        int limitMegabytes = (int)Math.Min((limitBytes + (1 << 20) - 1) >> 20, int.MaxValue);
        configuration.MemoryAllocator = MemoryAllocator.Create(new MemoryAllocatorOptions { AllocationLimitMegabytes = limitMegabytes });
        return configuration;
    }

    /// <summary>
    /// Bytes per pixel the decoder holds: its pixel buffer (8 for 16-bit PNGs, else 4), plus for JPEG the DCT
    /// coefficients a progressive file keeps for the whole image (about 4 more).
    /// </summary>
    internal static int DecoderBytesPerPixel(IImageFormat format, IImageInfo info) =>
        format is JpegFormat || info.Metadata.GetPngMetadata().BitDepth == PngBitDepth.Bit16 ? 8 : 4;

    private static void CheckDimensions(string source, IImageInfo info, ImageLimits limits)
    {
        if (info.Width <= 0 || info.Height <= 0)
        {
            throw Invalid(source, $"the image is zero-sized ({info.Width}x{info.Height})");
        }

        long pixels = (long)info.Width * info.Height;
        if (pixels > limits.MaxPixels)
        {
            throw OverLimit(source, $"{info.Width}x{info.Height} = {pixels} pixels exceeds the limit of {limits.MaxPixels} pixels", ImageLimits.MaxPixelsName);
        }
    }

    private static RgbImage Decode(Configuration configuration, byte[] bytes, IImageInfo info, bool applyExifOrientation)
    {
        // PIL keeps the high byte of 16-bit PNG samples; ImageSharp's own 16→8 conversion rounds instead.
        return info.Metadata.GetPngMetadata().BitDepth == PngBitDepth.Bit16
            ? Decode<Rgba64>(configuration, bytes, applyExifOrientation, (p, o) => { o[0] = (byte)(p.R >> 8); o[1] = (byte)(p.G >> 8); o[2] = (byte)(p.B >> 8); })
            : Decode<Rgba32>(configuration, bytes, applyExifOrientation, (p, o) => { o[0] = p.R; o[1] = p.G; o[2] = p.B; });
    }

    private delegate void PixelToRgb<TPixel>(TPixel pixel, Span<byte> rgb);

    /// <summary>Decodes with alpha kept in the pixel type, so transparent pixels keep their stored colour, then drops it.</summary>
    private static RgbImage Decode<TPixel>(Configuration configuration, byte[] bytes, bool applyExifOrientation, PixelToRgb<TPixel> toRgb)
        where TPixel : unmanaged, IPixel<TPixel>
    {
        using var image = Image.Load<TPixel>(configuration, bytes);
        if (applyExifOrientation)
        {
            image.Mutate(x => x.AutoOrient());
        }

        var result = RgbImage.Blank(image.Width, image.Height);
        image.ProcessPixelRows(accessor =>
        {
            for (int y = 0; y < accessor.Height; y++)
            {
                Span<TPixel> row = accessor.GetRowSpan(y);
                Span<byte> output = result.Pixels.AsSpan(result.IndexOf(0, y), row.Length * 3);
                for (int x = 0; x < row.Length; x++)
                {
                    toRgb(row[x], output.Slice(x * 3, 3));
                }
            }
        });
        return result;
    }

    /// <summary>Runs an ImageSharp call, turning its failures on bad input into <see cref="InvalidDataException"/>.</summary>
    private static T Guard<T>(string source, IImageFormat format, Func<T> action)
    {
        try
        {
            return action();
        }
        catch (InvalidMemoryOperationException)
        {
            throw OverLimit(source, $"decoding the {format.Name} data needs more memory than the pixel limit allows", ImageLimits.MaxPixelsName);
        }
        catch (Exception e) when (IsDecoderFailure(e))
        {
            throw Invalid(source, $"truncated or corrupt {format.Name} data ({e.Message})", e);
        }
    }

    // Besides its own ImageFormatException family, crafted input can trip argument, range and stream checks
    // deep inside the decoders; all of them mean "this file is bad", never "the server is broken".
    private static bool IsDecoderFailure(Exception e) => e is ImageFormatException or NotSupportedException
        or ArgumentException or IndexOutOfRangeException or InvalidOperationException or OverflowException or EndOfStreamException;

    private static string DescribeUnknownFormat(byte[] bytes, string? declaredMediaType)
    {
        string declared = declaredMediaType is null ? "" : $" (declared as {declaredMediaType})";
        return LooksLikeSvg(bytes)
            ? $"SVG is not supported{declared}; send PNG, JPEG, GIF, BMP, WebP or TIFF"
            : $"unknown or unsupported image format{declared}; expected PNG, JPEG, GIF, BMP, WebP or TIFF";
    }

    private static bool LooksLikeSvg(byte[] bytes)
    {
        string head = Encoding.UTF8.GetString(bytes, 0, Math.Min(bytes.Length, 4096)).TrimStart('\uFEFF', ' ', '\t', '\r', '\n');
        return head.StartsWith('<') && head.Contains("<svg", StringComparison.OrdinalIgnoreCase);
    }

    private static InvalidDataException Invalid(string source, string problem, Exception? inner = null) =>
        new($"Cannot load {source}: {problem}.", inner);

    private static CobraImageLimitException OverLimit(string source, string problem, string limitName) =>
        new($"Cannot load {source}: {problem} ({limitName}).", limitName);
}

/// <summary>An image whose header passed every check, not yet decoded.</summary>
internal sealed class InspectedImage
{
    internal InspectedImage(byte[] bytes, string source, ImageLimits limits, Configuration configuration, IImageFormat format, IImageInfo info)
    {
        Bytes = bytes;
        Source = source;
        Limits = limits;
        Configuration = configuration;
        Format = format;
        Info = info;
    }

    /// <summary>The encoded bytes.</summary>
    public byte[] Bytes { get; }

    /// <summary>Name used in error messages.</summary>
    public string Source { get; }

    /// <summary>The limits it was checked against.</summary>
    public ImageLimits Limits { get; }

    /// <summary>The private decoder configuration.</summary>
    public Configuration Configuration { get; }

    /// <summary>The detected format.</summary>
    public IImageFormat Format { get; }

    /// <summary>The header.</summary>
    public IImageInfo Info { get; }

    /// <summary>
    /// Memory decoding will hold at its peak, estimated: the encoded bytes, the decoder's pixel buffer and the
    /// RGB result.
    /// </summary>
    public long DecodeBytes => Bytes.Length + ((long)Info.Width * Info.Height * (ImageLoader.DecoderBytesPerPixel(Format, Info) + 3));
}
