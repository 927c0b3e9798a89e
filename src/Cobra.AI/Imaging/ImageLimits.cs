namespace Cobra.AI.Imaging;

/// <summary>Bounds that keep hostile or accidental inputs from exhausting a server.</summary>
internal sealed record ImageLimits
{
    /// <summary>Default pixel limit: 25 MP admits 24 MP camera photos (6000×4000) and every phone's default mode.</summary>
    public const long DefaultMaxPixels = 25_000_000;

    /// <summary>The option named in byte-limit errors.</summary>
    public const string MaxBytesName = "MaxImageBytes";

    /// <summary>The option named in pixel-limit errors.</summary>
    public const string MaxPixelsName = "MaxImagePixels";

    /// <summary>Largest encoded input accepted, in bytes.</summary>
    public long MaxBytes { get; init; } = 20 * 1024 * 1024;

    /// <summary>Largest width × height accepted; checked from the header before decoding.</summary>
    public long MaxPixels { get; init; } = DefaultMaxPixels;

    /// <summary>Rotate/flip per the EXIF orientation tag. Off by default because upstream Cobra does not.</summary>
    public bool ApplyExifOrientation { get; init; }
}
