using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace Cobra.AI.Tests.Loading;

/// <summary>A tensor as torch.save pickles it: a strided view into storage <c>StorageKey</c>.</summary>
internal sealed record FakeTensor(string StorageKey, string StorageType, long StorageNumel, long Offset, long[] Size, long[] Stride);

/// <summary>
/// Writes torch.save-style zip checkpoints byte by byte, the way torch 1.x/2.x lays them out, so the reader can
/// be tested on views, strides, shared storages and hostile pickles without Python.
/// </summary>
internal sealed class TorchSaveWriter
{
    private readonly MemoryStream pickle = new();

    /// <summary>Pickles a nested dict (values: <see cref="FakeTensor"/> or nested dicts) and returns the bytes.</summary>
    public static byte[] PickleTree(IReadOnlyList<(string Key, object Value)> root)
    {
        var writer = new TorchSaveWriter();
        writer.Op(0x80).Op(2);
        writer.Value(root);
        writer.Op('.');
        return writer.pickle.ToArray();
    }

    /// <summary>Writes the zip: <c>archive/data.pkl</c>, <c>archive/byteorder</c>, <c>archive/data/*</c>, <c>archive/version</c>.</summary>
    public static void WriteZip(string path, byte[] dataPkl, IReadOnlyDictionary<string, byte[]> storages, string archive = "archive")
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        Add(zip, $"{archive}/data.pkl", dataPkl);
        Add(zip, $"{archive}/byteorder", Encoding.ASCII.GetBytes("little"));
        foreach (var (key, bytes) in storages)
        {
            Add(zip, $"{archive}/data/{key}", bytes);
        }

        Add(zip, $"{archive}/version", Encoding.ASCII.GetBytes("3\n"));
    }

    /// <summary>Raw opcode or byte.</summary>
    public TorchSaveWriter Op(int value)
    {
        pickle.WriteByte((byte)value);
        return this;
    }

    /// <summary>BINUNICODE.</summary>
    public TorchSaveWriter Str(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        Op('X').Raw(BitConverter.GetBytes((uint)bytes.Length));
        return Raw(bytes);
    }

    /// <summary>BININT for 32-bit values, LONG1 for larger ones.</summary>
    public TorchSaveWriter Int(long value)
    {
        if (value is >= int.MinValue and <= int.MaxValue)
        {
            return Op('J').Raw(BitConverter.GetBytes((int)value));
        }

        var bytes = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, value);
        return Op(0x8a).Op(8).Raw(bytes);
    }

    /// <summary>GLOBAL "module\nname\n".</summary>
    public TorchSaveWriter Global(string module, string name) => Op('c').Raw(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

    /// <summary>The pickle so far.</summary>
    public byte[] ToArray() => pickle.ToArray();

    private TorchSaveWriter Raw(byte[] bytes)
    {
        pickle.Write(bytes);
        return this;
    }

    private void Value(object value)
    {
        switch (value)
        {
            case IReadOnlyList<(string Key, object Value)> dict:
                Op('}').Op('(');
                foreach (var (key, child) in dict)
                {
                    Str(key);
                    Value(child);
                }

                Op('u');
                break;
            case FakeTensor tensor:
                Tensor(tensor);
                break;
            default:
                throw new ArgumentException($"cannot pickle {value}");
        }
    }

    private void Tensor(FakeTensor t)
    {
        Global("torch._utils", "_rebuild_tensor_v2").Op('(');
        Op('(').Str("storage").Global("torch", t.StorageType).Str(t.StorageKey).Str("cpu").Int(t.StorageNumel).Op('t').Op('Q');
        Int(t.Offset).Longs(t.Size).Longs(t.Stride).Op(0x89);
        Global("collections", "OrderedDict").Op(')').Op('R');
        Op('t').Op('R');
    }

    private TorchSaveWriter Longs(long[] values)
    {
        Op('(');
        foreach (var v in values)
        {
            Int(v);
        }

        return Op('t');
    }

    private static void Add(ZipArchive zip, string name, byte[] bytes)
    {
        var entry = zip.CreateEntry(name, CompressionLevel.NoCompression);
        using var stream = entry.Open();
        stream.Write(bytes);
    }
}
