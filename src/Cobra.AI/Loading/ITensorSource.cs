using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>Name, element type and shape of one tensor in a checkpoint, known before any data is read.</summary>
/// <param name="Key">The tensor's key in the source (after any prefix was stripped).</param>
/// <param name="DType">Element type as stored.</param>
/// <param name="Shape">Shape as stored.</param>
internal sealed record TensorInfo(string Key, ScalarType DType, long[] Shape);

/// <summary>
/// A flat, read-only view of the tensors in a checkpoint file. Headers are validated when the source is
/// opened; tensor data is read on demand, so a loader can check every key and shape before touching data
/// and read each tensor straight into its destination parameter.
/// </summary>
internal interface ITensorSource : IDisposable
{
    /// <summary>The file (or file and prefix) this source reads, for error messages.</summary>
    string SourceName { get; }

    /// <summary>Every tensor key, in file order.</summary>
    IReadOnlyList<string> Keys { get; }

    /// <summary>Metadata of one tensor; throws <see cref="KeyNotFoundException"/> naming the key and file.</summary>
    TensorInfo GetInfo(string key);

    /// <summary>Reads one tensor into a new contiguous CPU tensor with the stored dtype and shape.</summary>
    Tensor Read(string key);

    /// <summary>
    /// Reads one tensor into <paramref name="destination"/> (any device, any floating dtype: the data is
    /// converted). Throws <see cref="InvalidDataException"/> naming the key and file when shapes differ.
    /// </summary>
    void ReadInto(string key, Tensor destination);
}
