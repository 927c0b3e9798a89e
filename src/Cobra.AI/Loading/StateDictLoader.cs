using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>What <see cref="StateDictLoader.Load"/> copied.</summary>
/// <param name="Tensors">Number of tensors read (a tied key counts once more).</param>
/// <param name="Bytes">Bytes written into the module's tensors.</param>
internal sealed record LoadSummary(int Tensors, long Bytes);

/// <summary>
/// A strict <c>load_state_dict</c> that reads straight from an <see cref="ITensorSource"/>. Unlike TorchSharp's
/// own, it names every missing, unexpected and mis-shaped key, and checks them all before reading any data,
/// so a wrong checkpoint fails fast and leaves the module untouched.
/// </summary>
internal static class StateDictLoader
{
    /// <summary>How many keys of each kind an error message lists before it only counts the rest.</summary>
    public const int MaxListedKeys = 20;

    /// <summary>
    /// Loads every parameter and buffer of <paramref name="module"/> from <paramref name="source"/>.
    /// <paramref name="tiedKeys"/> maps extra source keys to the module key they also feed (e.g.
    /// <c>lm_head.weight</c> → <c>backbone.embedding.weight</c>); when both are present the tied one is loaded
    /// last and wins, as in PyTorch, where both names point at one tensor.
    /// </summary>
    public static LoadSummary Load(nn.Module module, ITensorSource source, IReadOnlyDictionary<string, string>? tiedKeys = null)
    {
        tiedKeys ??= new Dictionary<string, string>();
        var targets = module.state_dict();
        var plan = Plan(targets, source, tiedKeys);

        long bytes = 0;
        using var noGrad = torch.no_grad();
        foreach (var (sourceKey, moduleKey) in plan)
        {
            var destination = targets[moduleKey];
            source.ReadInto(sourceKey, destination);
            bytes += destination.numel() * destination.ElementSize;
        }

        return new LoadSummary(plan.Count, bytes);
    }

    private static List<(string SourceKey, string ModuleKey)> Plan(
        Dictionary<string, Tensor> targets, ITensorSource source, IReadOnlyDictionary<string, string> tiedKeys)
    {
        var direct = new List<(string, string)>();
        var tied = new List<(string, string)>();
        var unexpected = new List<string>();
        foreach (var key in source.Keys)
        {
            if (targets.ContainsKey(key))
            {
                direct.Add((key, key));
            }
            else if (tiedKeys.TryGetValue(key, out var moduleKey) && targets.ContainsKey(moduleKey))
            {
                tied.Add((key, moduleKey));
            }
            else
            {
                unexpected.Add(key);
            }
        }

        var plan = direct.Concat(tied).ToList();
        var satisfied = plan.Select(p => p.Item2).ToHashSet(StringComparer.Ordinal);
        var missing = targets.Keys.Where(k => !satisfied.Contains(k)).ToList();
        var misShaped = plan.Select(p => MisShape(source, p.Item1, targets[p.Item2])).OfType<string>().ToList();
        if (missing.Count + unexpected.Count + misShaped.Count > 0)
        {
            throw new InvalidDataException($"{source.SourceName}: checkpoint does not match the module: "
                + string.Join("; ", new[] { List("missing key", missing), List("unexpected key", unexpected), List("mis-shaped key", misShaped) }.OfType<string>()));
        }

        return plan;
    }

    private static string? MisShape(ITensorSource source, string sourceKey, Tensor target)
    {
        var stored = source.GetInfo(sourceKey).Shape;
        return stored.SequenceEqual(target.shape)
            ? null
            : $"{sourceKey} (checkpoint {CheckpointErrors.Shape(stored)}, module {CheckpointErrors.Shape(target.shape)})";
    }

    private static string? List(string kind, List<string> items)
    {
        if (items.Count == 0)
        {
            return null;
        }

        var listed = string.Join(", ", items.Take(MaxListedKeys));
        var more = items.Count > MaxListedKeys ? $", ... and {items.Count - MaxListedKeys} more" : "";
        return $"{items.Count} {kind}{(items.Count == 1 ? "" : "s")}: {listed}{more}";
    }
}
