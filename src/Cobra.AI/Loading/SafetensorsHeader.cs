using System.Text.Json;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>
/// Parses and validates a safetensors JSON header against the size of the data section that follows it.
/// </summary>
internal static class SafetensorsHeader
{
    private const string MetadataKey = "__metadata__";

    private static readonly Dictionary<string, ScalarType> DTypes = new(StringComparer.Ordinal)
    {
        ["F64"] = ScalarType.Float64,
        ["F32"] = ScalarType.Float32,
        ["F16"] = ScalarType.Float16,
        ["BF16"] = ScalarType.BFloat16,
        ["I64"] = ScalarType.Int64,
        ["I32"] = ScalarType.Int32,
        ["I16"] = ScalarType.Int16,
        ["I8"] = ScalarType.Int8,
        ["U8"] = ScalarType.Byte,
        ["BOOL"] = ScalarType.Bool,
    };

    /// <summary>The validated entries, ordered by position in the file, and the metadata map.</summary>
    internal sealed record Result(List<SafetensorsFile.Entry> Entries, Dictionary<string, string> Metadata);

    /// <summary>Parses <paramref name="header"/>; every problem is an <see cref="InvalidDataException"/>.</summary>
    public static Result Parse(string path, byte[] header, long dataLength)
    {
        using var document = ParseJson(path, header);
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            throw CheckpointErrors.Invalid(path, $"header is a JSON {document.RootElement.ValueKind}, not an object");
        }

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var entries = new List<SafetensorsFile.Entry>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var property in document.RootElement.EnumerateObject())
        {
            if (!seen.Add(property.Name))
            {
                throw CheckpointErrors.InvalidTensor(path, property.Name, "appears twice in the header");
            }

            if (property.Name == MetadataKey)
            {
                ReadMetadata(path, property.Value, metadata);
            }
            else
            {
                entries.Add(ParseEntry(path, property.Name, property.Value, dataLength));
            }
        }

        // A stable sort keeps header order among empty tensors that share an offset.
        var ordered = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
        CheckNoOverlap(path, ordered);
        return new Result(ordered, metadata);
    }

    private static JsonDocument ParseJson(string path, byte[] header)
    {
        try
        {
            return JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw CheckpointErrors.Invalid(path, $"header is not valid JSON ({e.Message})", e);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw CheckpointErrors.Invalid(path, $"{MetadataKey} is a JSON {value.ValueKind}, not an object");
        }

        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
            {
                throw CheckpointErrors.Invalid(path, $"{MetadataKey} entry '{item.Name}' is not a string");
            }

            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static SafetensorsFile.Entry ParseEntry(string path, string key, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"entry is a JSON {value.ValueKind}, not an object");
        }

        var dtype = ParseDType(path, key, value);
        var shape = ParseLongs(path, key, value, "shape");
        var offsets = ParseLongs(path, key, value, "data_offsets");
        if (offsets.Length != 2)
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"data_offsets has {offsets.Length} values, expected [begin, end]");
        }

        var (begin, end) = (offsets[0], offsets[1]);
        if (begin > end)
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"data_offsets [{begin}, {end}] end before they begin");
        }

        if (end > dataLength)
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"data_offsets [{begin}, {end}] run past the end of the {dataLength}-byte data section");
        }

        CheckByteLength(path, key, dtype, shape, end - begin);
        return new SafetensorsFile.Entry(new TensorInfo(key, dtype, shape), begin, end);
    }

    private static ScalarType ParseDType(string path, string key, JsonElement value)
    {
        if (!value.TryGetProperty("dtype", out var dtype) || dtype.ValueKind != JsonValueKind.String)
        {
            throw CheckpointErrors.InvalidTensor(path, key, "has no string 'dtype'");
        }

        var name = dtype.GetString()!;
        return DTypes.TryGetValue(name, out var scalarType)
            ? scalarType
            : throw CheckpointErrors.InvalidTensor(path, key, $"unsupported dtype '{name}'");
    }

    private static long[] ParseLongs(string path, string key, JsonElement value, string field)
    {
        if (!value.TryGetProperty(field, out var array) || array.ValueKind != JsonValueKind.Array)
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"has no '{field}' array");
        }

        var result = new long[array.GetArrayLength()];
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out var number) || number < 0)
            {
                throw CheckpointErrors.InvalidTensor(path, key, $"'{field}' holds {item.GetRawText()}, not a non-negative integer");
            }

            result[i++] = number;
        }

        return result;
    }

    private static void CheckByteLength(string path, string key, ScalarType dtype, long[] shape, long byteLength)
    {
        long expected;
        try
        {
            expected = TensorBytes.ByteLength(shape, dtype);
        }
        catch (OverflowException e)
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"shape {CheckpointErrors.Shape(shape)} is too large", e);
        }

        if (expected != byteLength)
        {
            throw CheckpointErrors.InvalidTensor(path, key,
                $"{dtype} x {CheckpointErrors.Shape(shape)} needs {expected} bytes but data_offsets span {byteLength}");
        }
    }

    private static void CheckNoOverlap(string path, List<SafetensorsFile.Entry> ordered)
    {
        SafetensorsFile.Entry? previous = null;
        foreach (var entry in ordered.Where(e => e.End > e.Begin))
        {
            if (previous is not null && entry.Begin < previous.End)
            {
                throw CheckpointErrors.InvalidTensor(path, entry.Info.Key,
                    $"data [{entry.Begin}, {entry.End}) overlaps tensor '{previous.Info.Key}' [{previous.Begin}, {previous.End})");
            }

            previous = entry;
        }
    }
}
