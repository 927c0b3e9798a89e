namespace Cobra.AI.Loading;

/// <summary>
/// Builds the exceptions checkpoint readers throw, so every message starts with the file (and the tensor
/// key when there is one): a user with several checkpoints must be able to tell which one is broken.
/// </summary>
internal static class CheckpointErrors
{
    /// <summary>A malformed or inconsistent file: "<c>path: problem</c>".</summary>
    public static InvalidDataException Invalid(string source, string problem, Exception? inner = null) =>
        new($"{source}: {problem}", inner);

    /// <summary>A malformed entry of one tensor: "<c>path: tensor 'key': problem</c>".</summary>
    public static InvalidDataException InvalidTensor(string source, string key, string problem, Exception? inner = null) =>
        new($"{source}: tensor '{key}': {problem}", inner);

    /// <summary>A key that the source does not hold.</summary>
    public static KeyNotFoundException UnknownKey(string source, string key) =>
        new($"{source}: no tensor named '{key}'");

    /// <summary>The file does not exist.</summary>
    public static FileNotFoundException Missing(string path) =>
        new($"Checkpoint file not found: {path}", path);

    /// <summary>Formats a shape like PyTorch does, e.g. <c>[3, 4]</c>.</summary>
    public static string Shape(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape) + "]";
}
