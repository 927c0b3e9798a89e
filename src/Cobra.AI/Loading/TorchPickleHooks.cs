using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>One <c>data/&lt;key&gt;</c> storage of a torch.save archive: its element type and length.</summary>
/// <param name="Key">The storage key, also its file name under <c>data/</c>.</param>
/// <param name="DType">Element type of the storage.</param>
/// <param name="Numel">Number of elements the storage holds.</param>
internal sealed record TorchStorage(string Key, ScalarType DType, long Numel);

/// <summary>A tensor as <c>_rebuild_tensor_v2</c> describes it: a strided view into a storage, not yet read.</summary>
/// <param name="Storage">The storage the view reads.</param>
/// <param name="Offset">Storage offset in elements.</param>
/// <param name="Shape">Size of each dimension.</param>
/// <param name="Stride">Stride of each dimension, in elements.</param>
internal sealed record TorchTensorRef(TorchStorage Storage, long Offset, long[] Shape, long[] Stride);

/// <summary>
/// The allowlist of a torch.save pickle: <c>collections.OrderedDict</c>, the tensor and parameter rebuild
/// functions, and the legacy storage types named in persistent ids. Every other global is refused when it is
/// named, so a hostile pickle never gets as far as a call.
/// </summary>
internal sealed class TorchPickleHooks(string sourceName, Func<string, ScalarType, long, TorchStorage> loadStorage) : IPickleHooks
{
    private enum Callable
    {
        OrderedDict,
        RebuildTensor,
        RebuildTensorV2,
        RebuildParameter,
        RebuildParameterWithState,
    }

    /// <summary>A storage class such as <c>torch.FloatStorage</c>; only meaningful inside a persistent id.</summary>
    private sealed record StorageType(string Name, ScalarType DType);

    private static readonly Dictionary<string, object> Allowed = new(StringComparer.Ordinal)
    {
        ["collections.OrderedDict"] = Callable.OrderedDict,
        ["torch._utils._rebuild_tensor"] = Callable.RebuildTensor,
        ["torch._utils._rebuild_tensor_v2"] = Callable.RebuildTensorV2,
        ["torch._utils._rebuild_parameter"] = Callable.RebuildParameter,
        ["torch._utils._rebuild_parameter_with_state"] = Callable.RebuildParameterWithState,
        ["torch.DoubleStorage"] = new StorageType("torch.DoubleStorage", ScalarType.Float64),
        ["torch.FloatStorage"] = new StorageType("torch.FloatStorage", ScalarType.Float32),
        ["torch.HalfStorage"] = new StorageType("torch.HalfStorage", ScalarType.Float16),
        ["torch.BFloat16Storage"] = new StorageType("torch.BFloat16Storage", ScalarType.BFloat16),
        ["torch.LongStorage"] = new StorageType("torch.LongStorage", ScalarType.Int64),
        ["torch.IntStorage"] = new StorageType("torch.IntStorage", ScalarType.Int32),
        ["torch.ShortStorage"] = new StorageType("torch.ShortStorage", ScalarType.Int16),
        ["torch.CharStorage"] = new StorageType("torch.CharStorage", ScalarType.Int8),
        ["torch.ByteStorage"] = new StorageType("torch.ByteStorage", ScalarType.Byte),
        ["torch.BoolStorage"] = new StorageType("torch.BoolStorage", ScalarType.Bool),
    };

    private readonly Dictionary<string, TorchStorage> storages = new(StringComparer.Ordinal);

    /// <inheritdoc />
    public object ResolveGlobal(string module, string name)
    {
        var fullName = $"{module}.{name}";
        return Allowed.TryGetValue(fullName, out var value)
            ? value
            : throw CheckpointErrors.Invalid(sourceName, $"pickle references '{fullName}', which is not allowed");
    }

    /// <inheritdoc />
    public object? Invoke(object? callable, object?[] args) => callable switch
    {
        Callable.OrderedDict when args.Length == 0 => new OrderedDictionary<string, object?>(StringComparer.Ordinal),
        Callable.RebuildTensor when args.Length == 4 => RebuildTensor(args),
        // v2 adds requires_grad and backward hooks (and, since torch 2.0, optional metadata): none matter here.
        Callable.RebuildTensorV2 when args.Length is 6 or 7 => RebuildTensor(args),
        Callable.RebuildParameter when args.Length == 3 => Expect<TorchTensorRef>(args[0], "parameter data"),
        Callable.RebuildParameterWithState when args.Length == 4 => Expect<TorchTensorRef>(args[0], "parameter data"),
        Callable known => throw Fail($"{known} called with {args.Length} arguments"),
        _ => throw Fail($"pickle calls {Describe(callable)}, which is not callable here"),
    };

    /// <inheritdoc />
    public object? PersistentLoad(object? pid)
    {
        if (pid is not object?[] { Length: 5 } parts || parts[0] is not "storage")
        {
            throw Fail("persistent id is not ('storage', type, key, location, numel)");
        }

        var type = Expect<StorageType>(parts[1], "storage type");
        var key = Expect<string>(parts[2], "storage key");
        Expect<string>(parts[3], "storage location");
        var numel = Expect<long>(parts[4], "storage size");
        if (storages.TryGetValue(key, out var known))
        {
            return known.DType == type.DType && known.Numel == numel
                ? known
                : throw Fail($"storage '{key}' is described twice, as {known.DType}[{known.Numel}] and {type.Name}[{numel}]");
        }

        var storage = loadStorage(key, type.DType, numel);
        storages[key] = storage;
        return storage;
    }

    private TorchTensorRef RebuildTensor(object?[] args) => new(
        Expect<TorchStorage>(args[0], "tensor storage"),
        Expect<long>(args[1], "storage offset"),
        Longs(args[2], "tensor size"),
        Longs(args[3], "tensor stride"));

    private long[] Longs(object? value, string what)
    {
        var items = Expect<object?[]>(value, what);
        return items.Select(item => Expect<long>(item, what)).ToArray();
    }

    private T Expect<T>(object? value, string what) =>
        value is T typed ? typed : throw Fail($"{what} is {Describe(value)}, expected {typeof(T).Name}");

    private static string Describe(object? value) => value switch
    {
        null => "None",
        StorageType type => type.Name,
        _ => $"a {value.GetType().Name}",
    };

    private InvalidDataException Fail(string problem) => CheckpointErrors.Invalid(sourceName, "pickle: " + problem);
}
