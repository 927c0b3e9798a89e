namespace Cobra.AI.Imaging;

/// <summary>Bounds that keep hostile or accidental inputs from exhausting a server.</summary>
internal sealed record ImageLimits
{
    /// <summary>Largest encoded input accepted, in bytes.</summary>
    public long MaxBytes { get; init; } = 20 * 1024 * 1024;

    /// <summary>Largest width × height accepted; checked from the header before decoding.</summary>
    public long MaxPixels { get; init; } = 40_000_000;

    /// <summary>Rotate/flip per the EXIF orientation tag. Off by default because upstream Cobra does not.</summary>
    public bool ApplyExifOrientation { get; init; }
}
