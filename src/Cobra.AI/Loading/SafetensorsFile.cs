using Microsoft.Win32.SafeHandles;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>
/// A <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON header describing every tensor,
/// then the raw little-endian data. The header is validated completely when the file is opened, so nothing
/// it says is trusted later; tensor data is read on demand straight into the destination's memory.
/// </summary>
internal sealed class SafetensorsFile : ITensorSource
{
    /// <summary>Largest header accepted; real headers are a few hundred KiB, so more means a corrupt file.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly SafeFileHandle handle;
    private readonly long dataStart;
    private readonly Dictionary<string, Entry> entries;

    private SafetensorsFile(string path, SafeFileHandle handle, long dataStart, List<Entry> ordered)
    {
        SourceName = path;
        this.handle = handle;
        this.dataStart = dataStart;
        entries = ordered.ToDictionary(e => e.Info.Key);
        Keys = ordered.Select(e => e.Info.Key).ToArray();
    }

    /// <inheritdoc />
    public string SourceName { get; }

    /// <inheritdoc />
    public IReadOnlyList<string> Keys { get; }

    /// <summary>The optional <c>__metadata__</c> string map of the header.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; private init; } = new Dictionary<string, string>();

    /// <summary>Opens and validates <paramref name="path"/>; the file stays open until <see cref="Dispose"/>.</summary>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path))
        {
            throw CheckpointErrors.Missing(path);
        }

        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            var fileLength = RandomAccess.GetLength(handle);
            var header = ReadHeader(path, handle, fileLength);
            var dataStart = 8 + header.Length;
            var parsed = SafetensorsHeader.Parse(path, header, fileLength - dataStart);
            return new SafetensorsFile(path, handle, dataStart, parsed.Entries) { Metadata = parsed.Metadata };
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public TensorInfo GetInfo(string key) => Find(key).Info;

    /// <inheritdoc />
    public Tensor Read(string key)
    {
        var entry = Find(key);
        var tensor = empty(entry.Info.Shape, dtype: entry.Info.DType);
        try
        {
            FillFromFile(entry, tensor);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public void ReadInto(string key, Tensor destination)
    {
        var entry = Find(key);
        TensorBytes.CheckShape(SourceName, entry.Info, destination);
        if (TensorBytes.CanFillDirectly(destination, entry.Info.DType))
        {
            FillFromFile(entry, destination);
            return;
        }

        using var stored = Read(key);
        TensorBytes.CopyInto(stored, destination);
    }

    /// <inheritdoc />
    public void Dispose() => handle.Dispose();

    private static byte[] ReadHeader(string path, SafeFileHandle handle, long fileLength)
    {
        if (fileLength < 8)
        {
            throw CheckpointErrors.Invalid(path, $"file is {fileLength} bytes, shorter than the 8-byte header length");
        }

        Span<byte> lengthBytes = stackalloc byte[8];
        ReadExactly(path, handle, lengthBytes, 0);
        var headerLength = BitConverter.ToUInt64(lengthBytes);
        if (headerLength > MaxHeaderBytes)
        {
            throw CheckpointErrors.Invalid(path, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
        }

        if ((long)headerLength > fileLength - 8)
        {
            throw CheckpointErrors.Invalid(path, $"header length {headerLength} runs past the end of the {fileLength}-byte file");
        }

        var header = new byte[headerLength];
        ReadExactly(path, handle, header, 8);
        return header;
    }

    private void FillFromFile(Entry entry, Tensor target) =>
        TensorBytes.Fill(target, (offset, span) => ReadExactly(SourceName, handle, span, dataStart + entry.Begin + offset));

    private static void ReadExactly(string path, SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        while (!buffer.IsEmpty)
        {
            var read = RandomAccess.Read(handle, buffer, fileOffset);
            if (read == 0)
            {
                // The file shrank after the header was validated.
                throw CheckpointErrors.Invalid(path, $"unexpected end of file at byte {fileOffset}");
            }

            buffer = buffer[read..];
            fileOffset += read;
        }
    }

    private Entry Find(string key) =>
        entries.TryGetValue(key, out var entry) ? entry : throw CheckpointErrors.UnknownKey(SourceName, key);

    /// <summary>One validated header entry: its info and byte range inside the data section.</summary>
    internal sealed record Entry(TensorInfo Info, long Begin, long End);
}
