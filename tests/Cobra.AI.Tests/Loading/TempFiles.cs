using System.Text;

namespace Cobra.AI.Tests.Loading;

/// <summary>A scratch folder per test class, removed on dispose.</summary>
public sealed class TempFiles : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("cobra-loading-").FullName;

    /// <summary>A path inside the scratch folder.</summary>
    public string Path(string name) => System.IO.Path.Combine(root, name);

    /// <summary>Writes a safetensors file from a header JSON string and raw data.</summary>
    public string Safetensors(string name, string headerJson, byte[] data, ulong? headerLength = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var path = Path(name);
        using var file = File.Create(path);
        file.Write(BitConverter.GetBytes(headerLength ?? (ulong)header.Length));
        file.Write(header);
        file.Write(data);
        return path;
    }

    /// <summary>Little-endian float32 bytes.</summary>
    public static byte[] Floats(params float[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();

    /// <inheritdoc />
    public void Dispose() => Directory.Delete(root, recursive: true);
}
