using System.Buffers.Binary;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;

namespace Cobra.AI.Imaging;

/// <summary>
/// Cheap structural checks that catch cut-off files. ImageSharp decodes truncated JPEG, GIF and WebP
/// without complaint (it fills in the missing part), and a PNG cut inside its image data can do the same,
/// so a client upload that stopped early would silently become a different picture.
/// </summary>
internal static class ImageStructure
{
    /// <summary>Describes why <paramref name="data"/> is incomplete, or returns null when its framing is whole.</summary>
    public static string? FindTruncation(IImageFormat format, byte[] data) => format switch
    {
        PngFormat => CheckPng(data),
        JpegFormat => CheckJpeg(data),
        GifFormat => CheckGif(data),
        WebpFormat => CheckWebp(data),
        _ => null,
    };

    /// <summary>Walks the chunk list to IEND; every chunk must fit in the data.</summary>
    private static string? CheckPng(byte[] data)
    {
        long pos = 8;
        while (pos + 8 <= data.Length)
        {
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan((int)pos));
            bool isEnd = data.AsSpan((int)pos + 4, 4).SequenceEqual("IEND"u8);
            pos += 12L + length;
            if (pos > data.Length)
            {
                return "a PNG chunk runs past the end of the data";
            }

            if (isEnd)
            {
                return null;
            }
        }

        return "the PNG has no IEND chunk";
    }

    /// <summary>A whole JPEG ends with the EOI marker FF D9; some writers pad the file with zeros after it.</summary>
    private static string? CheckJpeg(byte[] data)
    {
        int end = data.Length;
        while (end > 0 && data[end - 1] == 0)
        {
            end--;
        }

        return end >= 2 && data[end - 2] == 0xFF && data[end - 1] == 0xD9
            ? null
            : "the JPEG does not end with the end-of-image marker FF D9";
    }

    /// <summary>Walks the GIF block stream (extensions and images, each a chain of sub-blocks) to the 0x3B trailer.</summary>
    private static string? CheckGif(byte[] data)
    {
        const string Truncated = "the GIF ends before its trailer (0x3B)";
        if (data.Length < 13)
        {
            return Truncated;
        }

        long pos = 13 + ColorTableBytes(data[10]);
        while (pos < data.Length)
        {
            switch (data[pos])
            {
                case 0x3B:
                    return null;
                case 0x21:
                    pos = SkipSubBlocks(data, pos + 2);
                    break;
                case 0x2C:
                    if (pos + 10 > data.Length)
                    {
                        return Truncated;
                    }

                    // Image descriptor (10 bytes), optional local colour table, LZW minimum code size, data.
                    pos = SkipSubBlocks(data, pos + 10 + ColorTableBytes(data[pos + 9]) + 1);
                    break;
                default:
                    return $"the GIF has an unknown block 0x{data[pos]:X2} at offset {pos}";
            }
        }

        return Truncated;
    }

    private static long ColorTableBytes(byte flags) => (flags & 0x80) != 0 ? 3L * (2 << (flags & 7)) : 0;

    /// <summary>Returns the offset after the zero-length terminator, or past the end when it is missing.</summary>
    private static long SkipSubBlocks(byte[] data, long pos)
    {
        while (pos < data.Length)
        {
            byte size = data[pos];
            pos += 1 + size;
            if (size == 0)
            {
                return pos;
            }
        }

        return data.Length;
    }

    /// <summary>The RIFF header states the file size; fewer bytes than that means the upload was cut.</summary>
    private static string? CheckWebp(byte[] data)
    {
        if (data.Length < 12)
        {
            return "the WebP is shorter than its RIFF header";
        }

        long declared = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(4)) + 8L;
        return declared > data.Length
            ? $"the WebP RIFF header declares {declared} bytes but only {data.Length} are present"
            : null;
    }
}
