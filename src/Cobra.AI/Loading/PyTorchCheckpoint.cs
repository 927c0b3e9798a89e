using System.IO.Compression;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>
/// A <c>torch.save</c> zip checkpoint (<c>&lt;archive&gt;/data.pkl</c> plus one <c>&lt;archive&gt;/data/&lt;key&gt;</c>
/// entry per storage). The pickle is run by <see cref="RestrictedUnpickler"/> with the torch allowlist, nested
/// dicts are flattened to dotted keys, and every tensor view is checked against its storage before any data is
/// read. Tensors are read on demand; not thread-safe (one zip stream at a time).
/// </summary>
internal sealed class PyTorchCheckpoint : ITensorSource
{
    /// <summary>Largest <c>data.pkl</c> accepted; the 3B Cobra checkpoint's is about 240 KB.</summary>
    public const long MaxPickleBytes = 256L * 1024 * 1024;

    /// <summary>Deepest dict nesting flattened; also stops a dict that (via the memo) contains itself.</summary>
    public const int MaxNesting = 64;

    /// <summary>
    /// Most dict entries flattened. Each dict is visited once (one the memo shares under two keys is refused), so
    /// this only stops very wide trees; the 3B checkpoint has about 1,200.
    /// </summary>
    public const int MaxFlattenedNodes = 1 << 22;

    /// <summary>
    /// Largest ratio of an entry's uncompressed to compressed size. torch.save stores entries uncompressed and
    /// weights deflate by a few percent, so more means a zip bomb whose declared size would be allocated.
    /// </summary>
    public const int MaxCompressionRatio = 16;

    private readonly ZipArchive archive;
    private readonly string prefix;
    private readonly OrderedDictionary<string, Entry> entries;

    private PyTorchCheckpoint(string path, ZipArchive archive, string prefix, OrderedDictionary<string, Entry> ordered)
    {
        SourceName = path;
        this.archive = archive;
        this.prefix = prefix;
        entries = ordered;
        Keys = [.. ordered.Keys];
    }

    /// <inheritdoc />
    public string SourceName { get; }

    /// <inheritdoc />
    public IReadOnlyList<string> Keys { get; }

    /// <summary>Opens <paramref name="path"/>, runs its pickle and validates every tensor view.</summary>
    public static PyTorchCheckpoint Open(string path)
    {
        if (!File.Exists(path))
        {
            throw CheckpointErrors.Missing(path);
        }

        var archive = OpenZip(path);
        try
        {
            var prefix = FindArchivePrefix(path, archive);
            CheckByteOrder(path, archive, prefix);
            var hooks = new TorchPickleHooks(path, (key, dtype, numel) => DescribeStorage(path, archive, prefix, key, dtype, numel));
            var root = RestrictedUnpickler.Load(ReadPickle(path, archive, prefix), path, hooks);
            var tensors = new OrderedDictionary<string, Entry>(StringComparer.Ordinal);
            new Flattener(path, tensors).Visit(root, "", 0);
            return new PyTorchCheckpoint(path, archive, prefix, tensors);
        }
        catch
        {
            archive.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public TensorInfo GetInfo(string key) => Find(key).Info;

    /// <inheritdoc />
    public Tensor Read(string key)
    {
        var entry = Find(key);
        var (info, view) = (entry.Info, entry.View);
        if (IsDense(view) || TensorBytes.Numel(info.Shape) == 0)
        {
            return ReadNew(info.Key, view.Storage, view.Offset, info.Shape);
        }

        // Read only the span of the storage the view touches, then gather it into a dense tensor.
        var length = MaxIndex(view) - view.Offset + 1;
        using var region = ReadNew(info.Key, view.Storage, view.Offset, [length]);
        using var strided = region.as_strided(info.Shape, view.Stride, 0);
        return strided.contiguous();
    }

    /// <inheritdoc />
    public void ReadInto(string key, Tensor destination)
    {
        var entry = Find(key);
        TensorBytes.CheckShape(SourceName, entry.Info, destination);
        if (IsDense(entry.View) && TensorBytes.CanFillDirectly(destination, entry.Info.DType))
        {
            FillFromStorage(entry.Info.Key, entry.View.Storage, entry.View.Offset, destination);
            return;
        }

        using var stored = Read(key);
        TensorBytes.CopyInto(stored, destination);
    }

    /// <inheritdoc />
    public void Dispose() => archive.Dispose();

    private static ZipArchive OpenZip(string path)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            return new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: false);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            stream.Dispose();
            throw CheckpointErrors.Invalid(path, $"not a readable torch.save zip archive ({e.Message})", e);
        }
    }

    private static string FindArchivePrefix(string path, ZipArchive archive)
    {
        // The folder name is whatever the file was first saved as, so find it instead of guessing it.
        var pickles = archive.Entries
            .Select(e => e.FullName)
            .Where(name => name.EndsWith("/data.pkl", StringComparison.Ordinal) && name.IndexOf('/') == name.Length - "/data.pkl".Length)
            .ToList();
        return pickles.Count == 1
            ? pickles[0][..^"/data.pkl".Length]
            : throw CheckpointErrors.Invalid(path, $"expected one '<archive>/data.pkl' entry, found {pickles.Count}");
    }

    private static void CheckByteOrder(string path, ZipArchive archive, string prefix)
    {
        // Files from torch < 1.10 have no byteorder entry; they were written on little-endian machines.
        var entry = archive.GetEntry($"{prefix}/byteorder");
        if (entry is null)
        {
            return;
        }

        using var reader = new StreamReader(entry.Open());
        var order = reader.ReadToEnd().Trim();
        if (order != "little")
        {
            throw CheckpointErrors.Invalid(path, $"byteorder is '{order}', only 'little' is supported");
        }
    }

    private static byte[] ReadPickle(string path, ZipArchive archive, string prefix)
    {
        var entry = archive.GetEntry($"{prefix}/data.pkl")!;
        if (entry.Length > MaxPickleBytes)
        {
            throw CheckpointErrors.Invalid(path, $"data.pkl is {entry.Length} bytes, over the {MaxPickleBytes}-byte limit");
        }

        CheckCompression(path, entry, "data.pkl");

        var bytes = new byte[entry.Length];
        try
        {
            using var stream = entry.Open();
            stream.ReadExactly(bytes);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            throw CheckpointErrors.Invalid(path, $"cannot read data.pkl ({e.Message})", e);
        }

        return bytes;
    }

    private static void CheckCompression(string path, ZipArchiveEntry entry, string what)
    {
        if (entry.Length > 4096 && entry.Length / MaxCompressionRatio > entry.CompressedLength)
        {
            throw CheckpointErrors.Invalid(path, $"{what} expands from {entry.CompressedLength} to {entry.Length} bytes, more than {MaxCompressionRatio}x (PyTorchCheckpoint.MaxCompressionRatio): a zip bomb, not a torch.save archive");
        }
    }

    private static TorchStorage DescribeStorage(string path, ZipArchive archive, string prefix, string key, ScalarType dtype, long numel)
    {
        var entry = archive.GetEntry($"{prefix}/data/{key}")
            ?? throw CheckpointErrors.Invalid(path, $"storage '{key}' has no 'data/{key}' entry");
        CheckCompression(path, entry, $"storage '{key}'");
        long expected;
        try
        {
            expected = numel < 0 ? -1 : TensorBytes.ByteLength([numel], dtype);
        }
        catch (OverflowException)
        {
            expected = -1;
        }

        return expected == entry.Length
            ? new TorchStorage(key, dtype, numel)
            : throw CheckpointErrors.Invalid(path, $"storage '{key}' holds {entry.Length} bytes, but {numel} x {dtype} needs {expected}");
    }

    /// <summary>
    /// Flattens nested dicts to dotted keys. The memo lets a pickle put one dict under many keys, which would
    /// make a tree of n shared levels expand to 2^n paths from a file of a few bytes per level; a real
    /// state_dict never shares a dict, so the second sighting is refused and the walk stays linear.
    /// </summary>
    private sealed class Flattener(string path, OrderedDictionary<string, Entry> into)
    {
        private readonly Dictionary<object, string> seen = new(ReferenceEqualityComparer.Instance);
        private int nodes;

        public void Visit(object? node, string key, int depth)
        {
            if (++nodes > MaxFlattenedNodes)
            {
                throw CheckpointErrors.Invalid(path, $"the pickle's dicts hold more than {MaxFlattenedNodes} entries (PyTorchCheckpoint.MaxFlattenedNodes)");
            }

            switch (node)
            {
                case OrderedDictionary<string, object?> when depth >= MaxNesting:
                    throw CheckpointErrors.Invalid(path, $"dicts nest deeper than {MaxNesting} levels at '{key}'");
                case OrderedDictionary<string, object?> dict:
                    if (!seen.TryAdd(dict, key))
                    {
                        throw CheckpointErrors.Invalid(path, $"the dict at '{key}' is the same object as the one at '{seen[dict]}' (shared through the pickle memo); a state_dict never shares dicts");
                    }

                    foreach (var (name, child) in dict)
                    {
                        Visit(child, key.Length == 0 ? name : $"{key}.{name}", depth + 1);
                    }

                    break;
                case TorchTensorRef view when depth > 0:
                    if (!into.TryAdd(key, Validate(path, key, view)))
                    {
                        throw CheckpointErrors.InvalidTensor(path, key, "appears twice after flattening nested dicts");
                    }

                    break;
                case not null when depth == 0:
                    throw CheckpointErrors.Invalid(path, $"top-level object is a {node.GetType().Name}, not a dict");
                default:
                    // Non-tensor leaves (epoch counters, config strings, lists) are not state.
                    break;
            }
        }
    }

    private static Entry Validate(string path, string key, TorchTensorRef view)
    {
        if (view.Shape.Length != view.Stride.Length)
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"size {CheckpointErrors.Shape(view.Shape)} and stride {CheckpointErrors.Shape(view.Stride)} differ in rank");
        }

        if (view.Offset < 0 || view.Shape.Any(s => s < 0) || view.Stride.Any(s => s < 0))
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"negative offset, size or stride (offset {view.Offset}, size {CheckpointErrors.Shape(view.Shape)}, stride {CheckpointErrors.Shape(view.Stride)})");
        }

        CheckInsideStorage(path, key, view);
        return new Entry(new TensorInfo(key, view.Storage.DType, view.Shape), view);
    }

    private static void CheckInsideStorage(string path, string key, TorchTensorRef view)
    {
        try
        {
            if (TensorBytes.Numel(view.Shape) == 0)
            {
                return;
            }

            var last = MaxIndex(view);
            if (last >= view.Storage.Numel)
            {
                throw CheckpointErrors.InvalidTensor(path, key,
                    $"view (offset {view.Offset}, size {CheckpointErrors.Shape(view.Shape)}, stride {CheckpointErrors.Shape(view.Stride)}) reaches element {last} of storage '{view.Storage.Key}', which has {view.Storage.Numel}");
            }

            // A view stays inside its storage with stride 0 and any size, yet reading it materialises every element:
            // a few bytes of storage could become gigabytes. Weights never overlap themselves, so refuse it here,
            // before anything is allocated; then no read allocates more than the file holds.
            var numel = TensorBytes.Numel(view.Shape);
            if (numel > view.Storage.Numel)
            {
                throw CheckpointErrors.InvalidTensor(path, key,
                    $"view (size {CheckpointErrors.Shape(view.Shape)}, stride {CheckpointErrors.Shape(view.Stride)}) has {numel} elements, more than the {view.Storage.Numel} of storage '{view.Storage.Key}' (overlapping strides are not supported)");
            }
        }
        catch (OverflowException e)
        {
            throw CheckpointErrors.InvalidTensor(path, key, $"size {CheckpointErrors.Shape(view.Shape)} with stride {CheckpointErrors.Shape(view.Stride)} overflows", e);
        }
    }

    /// <summary>Storage index of the view's last element (offset + Σ (size-1)·stride); sizes must be non-zero.</summary>
    private static long MaxIndex(TorchTensorRef view)
    {
        var last = view.Offset;
        for (var i = 0; i < view.Shape.Length; i++)
        {
            last = checked(last + ((view.Shape[i] - 1) * view.Stride[i]));
        }

        return last;
    }

    /// <summary>Whether the view is a dense row-major block (strides of size-1 dimensions do not matter).</summary>
    private static bool IsDense(TorchTensorRef view)
    {
        long expected = 1;
        for (var i = view.Shape.Length - 1; i >= 0; i--)
        {
            if (view.Shape[i] != 1 && view.Stride[i] != expected)
            {
                return false;
            }

            expected *= view.Shape[i];
        }

        return true;
    }

    private Tensor ReadNew(string key, TorchStorage storage, long offset, long[] shape)
    {
        var tensor = empty(shape, dtype: storage.DType);
        try
        {
            FillFromStorage(key, storage, offset, tensor);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    private void FillFromStorage(string key, TorchStorage storage, long elementOffset, Tensor target)
    {
        if (target.numel() == 0)
        {
            return;
        }

        try
        {
            using var stream = archive.GetEntry($"{prefix}/data/{storage.Key}")!.Open();
            Skip(stream, elementOffset * TensorBytes.ElementSize(storage.DType));
            TensorBytes.Fill(target, (_, span) => stream.ReadExactly(span));
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            throw CheckpointErrors.InvalidTensor(SourceName, key, $"cannot read storage '{storage.Key}' ({e.Message})", e);
        }
    }

    private static void Skip(Stream stream, long bytes)
    {
        if (stream.CanSeek)
        {
            stream.Seek(bytes, SeekOrigin.Begin);
            return;
        }

        // Compressed entries cannot seek: torch.save stores storages uncompressed, but other writers may not.
        var scratch = new byte[Math.Min(bytes, 1 << 16)];
        while (bytes > 0)
        {
            var chunk = (int)Math.Min(bytes, scratch.Length);
            stream.ReadExactly(scratch, 0, chunk);
            bytes -= chunk;
        }
    }

    private Entry Find(string key) =>
        entries.TryGetValue(key, out var entry) ? entry : throw CheckpointErrors.UnknownKey(SourceName, key);

    /// <summary>One flattened tensor: its info and the storage view it reads.</summary>
    private sealed record Entry(TensorInfo Info, TorchTensorRef View);
}
