using TorchSharp;

namespace Cobra.AI.Modeling;

/// <summary>
/// Scalars held for the process's lifetime. TorchSharp's implicit number-to-<see cref="Scalar"/> conversions make
/// temporaries that nothing references once their handle is passed to native code, so the finalizer may free one
/// while libtorch still reads it (seen as "Expected false to be true ... toFloat" under GC pressure). Hot paths
/// use these, or a <see cref="Scalar"/> their owner keeps alive, instead.
/// </summary>
internal static class Scalars
{
    /// <summary>1.</summary>
    public static readonly Scalar One = 1.0.ToScalar();

    /// <summary>0.</summary>
    public static readonly Scalar Zero = 0.0.ToScalar();

    /// <summary>-1.</summary>
    public static readonly Scalar MinusOne = (-1.0).ToScalar();

    /// <summary>-∞ (masked logits).</summary>
    public static readonly Scalar NegativeInfinity = float.NegativeInfinity.ToScalar();
}
