using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation;

/// <summary>
/// Picks the next token from float32 logits [B, V] exactly as mamba_ssm 1.2's <c>sample()</c>: argmax when
/// greedy; otherwise (top-k, then ÷ temperature) or (÷ temperature), then the top-p filter, softmax and a
/// multinomial draw from a seeded generator.
/// </summary>
internal sealed class Sampler : IDisposable
{
    private readonly SamplingOptions options;
    private readonly Generator? generator;

    /// <summary>Creates a sampler; the generator lives on <paramref name="device"/>.</summary>
    public Sampler(SamplingOptions options, Device device)
    {
        options.Validate();
        this.options = options;
        if (!options.IsGreedy)
        {
            generator = new Generator((ulong)(options.Seed ?? Random.Shared.NextInt64()), device);
        }
    }

    /// <summary>
    /// Next token id for one sequence: logits [1, V], after the penalties over <paramref name="promptIds"/>
    /// (repetition penalty only) and <paramref name="generatedIds"/>.
    /// </summary>
    public Tensor Next(Tensor logits, IReadOnlyList<int> promptIds, IReadOnlyList<int> generatedIds) =>
        Next(ApplyPenalties(logits, promptIds, generatedIds));

    /// <summary>Next token id per row: [B] int64.</summary>
    public Tensor Next(Tensor logits)
    {
        if (generator is null)
        {
            return logits.argmax(-1);                                            // [B]
        }

        if (options.TopK > 1)
        {
            var (values, indices) = logits.topk(Math.Min(options.TopK, (int)logits.shape[^1]), dim: -1); // [B,k]
            var probs = FilterTopP(values / options.Temperature).softmax(-1);    // [B,k]
            return indices.gather(-1, torch.multinomial(probs, 1, generator: generator)).squeeze(-1);
        }

        var all = FilterTopP(logits / options.Temperature).softmax(-1);          // [B,V]
        return torch.multinomial(all, 1, generator: generator).squeeze(-1);      // [B]
    }

    private Tensor ApplyPenalties(Tensor logits, IReadOnlyList<int> promptIds, IReadOnlyList<int> generatedIds)
    {
        bool repetition = options.RepetitionPenalty != 1.0 && (promptIds.Count + generatedIds.Count) > 0;
        bool occurrence = (options.FrequencyPenalty != 0 || options.PresencePenalty != 0) && generatedIds.Count > 0;
        if (!repetition && !occurrence)
        {
            return logits;
        }

        var result = logits.clone();                                             // [1,V]
        if (repetition)
        {
            // CTRL: positive logits are divided by the penalty, negative ones multiplied.
            var seen = torch.tensor(promptIds.Concat(generatedIds).Distinct().Select(i => (long)i).ToArray(), device: logits.device).unsqueeze(0);
            var values = result.gather(-1, seen);
            result.scatter_(-1, seen, torch.where(values > 0, values / options.RepetitionPenalty, values * options.RepetitionPenalty));
        }

        if (occurrence)
        {
            var counts = generatedIds.GroupBy(i => i).ToArray();
            var ids = torch.tensor(counts.Select(g => (long)g.Key).ToArray(), device: logits.device).unsqueeze(0);
            var penalty = torch.tensor(counts.Select(g => (float)((options.FrequencyPenalty * g.Count()) + options.PresencePenalty)).ToArray(), device: logits.device).unsqueeze(0);
            result.scatter_(-1, ids, result.gather(-1, ids) - penalty);
        }

        return result;
    }

    /// <summary>Removes the tokens whose ascending cumulative probability stays ≤ 1 − top_p.</summary>
    private Tensor FilterTopP(Tensor logits)
    {
        if (options.TopP <= 0 || options.TopP >= 1)
        {
            return logits;
        }

        var (sorted, order) = logits.sort(-1, descending: false);                // [B,V]
        var remove = sorted.softmax(-1).cumsum(-1) <= (1 - options.TopP);        // [B,V]
        var removeByToken = remove.scatter(-1, order, remove);                   // [B,V]
        return logits.masked_fill(removeByToken, float.NegativeInfinity);
    }

    /// <inheritdoc />
    public void Dispose() => generator?.Dispose();
}
