using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>
/// Element sizes, overflow-checked byte lengths, and filling a tensor's memory from a byte source: the
/// pieces both checkpoint readers share.
/// </summary>
internal static class TensorBytes
{
    /// <summary>
    /// <see cref="Span{T}"/> lengths are <see cref="int"/>, so a tensor over 2 GiB is filled through views of
    /// at most this many bytes.
    /// </summary>
    public const long DefaultChunkBytes = 1L << 30;

    /// <summary>Bytes per element of the dtypes checkpoints may hold.</summary>
    public static int ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        ScalarType.Int8 or ScalarType.Byte or ScalarType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a checkpoint dtype"),
    };

    /// <summary>Number of elements of <paramref name="shape"/>; throws <see cref="OverflowException"/>.</summary>
    public static long Numel(IReadOnlyList<long> shape)
    {
        long numel = 1;
        foreach (var size in shape)
        {
            numel = checked(numel * size);
        }

        return numel;
    }

    /// <summary>Bytes of a dense tensor of this shape and dtype; throws <see cref="OverflowException"/>.</summary>
    public static long ByteLength(IReadOnlyList<long> shape, ScalarType dtype) =>
        checked(Numel(shape) * ElementSize(dtype));

    /// <summary>
    /// Whether data of <paramref name="storedDType"/> can be written straight into the memory of
    /// <paramref name="destination"/>, with no temporary tensor.
    /// </summary>
    public static bool CanFillDirectly(Tensor destination, ScalarType storedDType) =>
        destination.device_type == DeviceType.CPU && destination.dtype == storedDType && destination.is_contiguous();

    /// <summary>
    /// Fills a CPU contiguous tensor in order: <paramref name="read"/> gets the byte offset inside the tensor
    /// and a span over the next part of its memory, and must fill the span completely.
    /// </summary>
    public static void Fill(Tensor target, Action<long, Span<byte>> read, long chunkBytes = DefaultChunkBytes)
    {
        var total = target.numel();
        if (total == 0)
        {
            return;
        }

        long elementSize = ElementSize(target.dtype);
        var perChunk = Math.Max(1, chunkBytes / elementSize);
        using var flat = target.view(-1);
        for (long start = 0; start < total; start += perChunk)
        {
            var count = Math.Min(perChunk, total - start);
            using var part = flat.narrow(0, start, count);
            read(start * elementSize, part.bytes);
        }
    }

    /// <summary>
    /// Copies <paramref name="source"/> into <paramref name="destination"/>, converting dtype and device, without
    /// recording autograd history (destinations are usually parameters that require grad).
    /// </summary>
    public static void CopyInto(Tensor source, Tensor destination)
    {
        using var noGrad = torch.no_grad();
        destination.copy_(source);
    }

    /// <summary>Throws when the destination's shape differs from the stored one, naming both.</summary>
    public static void CheckShape(string sourceName, TensorInfo info, Tensor destination)
    {
        if (!destination.shape.SequenceEqual(info.Shape))
        {
            throw CheckpointErrors.InvalidTensor(sourceName, info.Key,
                $"stored shape {CheckpointErrors.Shape(info.Shape)} does not match destination shape {CheckpointErrors.Shape(destination.shape)}");
        }
    }
}
