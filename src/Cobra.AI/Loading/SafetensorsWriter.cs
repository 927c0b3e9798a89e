using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>Writes tensors to a safetensors file (8-byte header length, JSON header, packed little-endian data).</summary>
internal static class SafetensorsWriter
{
    private static readonly Dictionary<ScalarType, string> DTypeNames = new()
    {
        [ScalarType.Float64] = "F64", [ScalarType.Float32] = "F32", [ScalarType.Float16] = "F16", [ScalarType.BFloat16] = "BF16",
        [ScalarType.Int64] = "I64", [ScalarType.Int32] = "I32", [ScalarType.Int16] = "I16", [ScalarType.Int8] = "I8",
        [ScalarType.Byte] = "U8", [ScalarType.Bool] = "BOOL",
    };

    /// <summary>Writes <paramref name="tensors"/> (any device; written as stored dtype) to <paramref name="path"/>.</summary>
    public static void Write(string path, IReadOnlyList<(string Name, Tensor Tensor)> tensors)
    {
        using var scope = torch.NewDisposeScope();
        var header = new Dictionary<string, object>();
        var payloads = new List<Tensor>();
        long offset = 0;
        foreach (var (name, tensor) in tensors)
        {
            var data = tensor.cpu().contiguous();
            long length = data.NumberOfElements * data.ElementSize;
            header[name] = new Dictionary<string, object>
            {
                ["dtype"] = DTypeNames.TryGetValue(data.dtype, out var d) ? d : throw new ArgumentException($"{name}: dtype {data.dtype} cannot be written to safetensors."),
                ["shape"] = data.shape,
                ["data_offsets"] = new[] { offset, offset + length },
            };
            payloads.Add(data);
            offset += length;
        }

        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padding = (8 - (json.Length % 8)) % 8;                               // keeps the data 8-byte aligned
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write);
        file.Write(BitConverter.GetBytes((ulong)(json.Length + padding)));
        file.Write(json);
        file.Write(Encoding.ASCII.GetBytes(new string(' ', padding)));
        foreach (var data in payloads)
        {
            file.Write(data.bytes);
        }
    }
}
