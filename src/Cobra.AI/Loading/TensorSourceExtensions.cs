using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>Views over an <see cref="ITensorSource"/>.</summary>
internal static class TensorSourceExtensions
{
    /// <summary>
    /// The tensors whose keys start with <paramref name="prefix"/>, with the prefix removed, e.g. the
    /// <c>model.llm_backbone.</c> part of a Cobra checkpoint. The view does not own
    /// <paramref name="source"/> (several views usually share one file): disposing it does nothing.
    /// </summary>
    public static ITensorSource WithPrefix(this ITensorSource source, string prefix) => new PrefixedTensorSource(source, prefix);

    private sealed class PrefixedTensorSource(ITensorSource inner, string prefix) : ITensorSource
    {
        public string SourceName { get; } = $"{inner.SourceName} [{prefix}]";

        public IReadOnlyList<string> Keys { get; } = inner.Keys
            .Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
            .Select(k => k[prefix.Length..])
            .ToArray();

        public TensorInfo GetInfo(string key) => inner.GetInfo(prefix + key) with { Key = key };

        public Tensor Read(string key) => inner.Read(prefix + key);

        public void ReadInto(string key, Tensor destination) => inner.ReadInto(prefix + key, destination);

        public void Dispose()
        {
            // The inner source belongs to whoever opened it.
        }
    }
}
