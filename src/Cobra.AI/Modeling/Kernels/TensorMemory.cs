using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>Raw access to CPU tensor memory for the managed SIMD kernels.</summary>
internal static class TensorMemory
{
    /// <summary>
    /// Address of the first element of a contiguous CPU tensor under 2 GiB (TorchSharp's <c>bytes</c> span
    /// views the storage in place). The tensor must stay alive while the address is used.
    /// </summary>
    public static unsafe nint Address(Tensor tensor) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(tensor.bytes));

    /// <summary>
    /// Address of the first element of any CPU tensor, a strided view included (TorchSharp's <c>bytes</c> refuses
    /// those: it is taken through a one-element view at the same storage offset). The kernel reading it owns the
    /// strides; the tensor must stay alive while the address is used.
    /// </summary>
    public static nint FirstElement(Tensor tensor)
    {
        if (tensor.is_contiguous())
        {
            return Address(tensor);
        }

        using var first = tensor.as_strided([1], [1], tensor.storage_offset());
        return Address(first);
    }
}
