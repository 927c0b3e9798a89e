using Cobra.AI.Generation.Constrained;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation;

/// <summary>
/// One decode row's sampling settings and history: the penalties' inputs, its constraint, its random stream.
/// Row i of a request with seed S draws from the stream seeded S + i, so a seeded request is reproducible
/// whatever shares its batch.
/// </summary>
internal sealed class SamplingRow
{
    private readonly HashSet<int> seen;                                          // prompt ∪ output ids (repetition penalty)
    private readonly Dictionary<int, int> counts = [];                           // output id -> occurrences (frequency/presence)
    private ulong rngState;

    public SamplingRow(SamplingOptions options, IReadOnlyList<int> promptIds, int choice, ITokenConstraint? constraint, bool logprobs, int topLogprobs)
    {
        Options = options;
        Constraint = constraint;
        Logprobs = logprobs;
        TopLogprobs = topLogprobs;
        seen = options.RepetitionPenalty != 1.0 ? [.. promptIds] : [];
        rngState = unchecked((ulong)(options.Seed ?? Random.Shared.NextInt64()) + (ulong)choice);
    }

    public SamplingOptions Options { get; }

    public ITokenConstraint? Constraint { get; }

    public bool Logprobs { get; }

    public int TopLogprobs { get; }

    public bool HasRepetitionPenalty => Options.RepetitionPenalty != 1.0 && seen.Count > 0;

    public bool HasOccurrencePenalty => (Options.FrequencyPenalty != 0 || Options.PresencePenalty != 0) && counts.Count > 0;

    public IEnumerable<int> Seen => seen;

    public IEnumerable<KeyValuePair<int, int>> Counts => counts;

    /// <summary>Records a chosen token for the penalties and the constraint.</summary>
    public void Accept(int token)
    {
        if (Options.RepetitionPenalty != 1.0)
        {
            seen.Add(token);
        }

        if (Options.FrequencyPenalty != 0 || Options.PresencePenalty != 0)
        {
            counts[token] = counts.GetValueOrDefault(token) + 1;
        }

        Constraint?.Accept(token);
    }

    /// <summary>The next uniform draw in [0, 1) of this row's SplitMix64 stream.</summary>
    public double NextUniform()
    {
        ulong z = rngState += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (z >> 11) * (1.0 / (1UL << 53));
    }
}

/// <summary>The token a row chose, its log-probabilities when asked for, or the error of that row alone (its constraint failed).</summary>
internal readonly record struct SampledToken(int Token, CobraTokenLogprob? Logprob, Exception? Error = null);

/// <summary>
/// Picks the next token for every row of a batch in one pass over float32 logits [B, V] with mamba_ssm 1.2's
/// <c>sample()</c> semantics per row: penalties (CTRL repetition over prompt and output; OpenAI frequency and
/// presence over the output), the row's constraint mask, then argmax when greedy, else top-k, ÷ temperature,
/// top-p, and an inverse-CDF draw with the row's own uniform number (over the candidates most likely first; in id
/// order when nothing is cut, where no ranking is needed). One host sync per call (the chosen ids; none when every
/// row is greedy and <see cref="LogitRowsCpu"/> found them), plus one more when some row asked for
/// log-probabilities, and on the CPU one when some row has top-p without top-k (whether its nucleus reaches past the
/// candidates ranked first).
/// </summary>
internal static class BatchSampler
{
    /// <param name="logits">Float32 logits [B, V].</param>
    /// <param name="rows">Each row's settings and history.</param>
    /// <param name="tokenizer">For the log-probabilities' token texts (null: empty texts).</param>
    /// <param name="cpuKernels">On CPU logits, every row's argmax and log Σ exp in one managed kernel (<see cref="LogitRowsCpu"/>) instead of torch ops.</param>
    public static SampledToken[] Sample(Tensor logits, IReadOnlyList<SamplingRow> rows, Text.CobraTokenizer? tokenizer, bool cpuKernels = true)
    {
        if (logits.dim() != 2 || logits.shape[0] != rows.Count)
        {
            throw new ArgumentException($"Expected logits [{rows.Count}, V] for {rows.Count} sampling rows, got [{string.Join(", ", logits.shape)}].", nameof(logits));
        }

        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        long vocab = logits.shape[1];
        var device = logits.device;
        var adjusted = ApplyPenalties(logits, rows, vocab);                      // [B,V]
        var errors = new Exception?[rows.Count];
        adjusted = ApplyConstraints(adjusted, rows, vocab, errors);              // [B,V]
        var fused = cpuKernels && LogitRowsCpu.Supports(adjusted) ? LogitRowsCpu.TryRun(adjusted) : null; // argmax [B], log Σ exp [B]
        var chosen = fused is { } f ? torch.tensor(f.Argmax) : adjusted.argmax(-1); // [B]

        // Sampling rows grouped by how many candidates their own settings keep (so a row's draw never depends on
        // its batch-mates): its top-k, every logit for a top-p cut alone, none to sort without a cut.
        var sampling = Enumerable.Range(0, rows.Count).Where(i => !rows[i].Options.IsGreedy).ToArray();
        foreach (var group in sampling.GroupBy(i => Candidates(rows[i].Options, vocab)))
        {
            var members = group.ToArray();
            using var index = torch.tensor(members.Select(i => (long)i).ToArray(), device: device); // [S]
            var subset = adjusted.index_select(0, index);                          // [S,V]
            var groupRows = members.Select(i => rows[i]).ToArray();
            var picked = group.Key == 0 ? DrawFromAll(subset, groupRows, device)      // [S]
                : group.Key < vocab ? Draw(subset, groupRows, group.Key, device)
                : DrawNucleus(subset, groupRows, device);
            chosen = chosen.index_copy(0, index, picked);
        }

        long[] tokens = sampling.Length == 0 && fused is { } known ? known.Argmax : chosen.cpu().data<long>().ToArray(); // the one host sync
        var result = tokens.Select((t, i) => new SampledToken((int)t, null, errors[i])).ToArray();
        AddLogprobs(adjusted, chosen, fused?.LogSumExp, rows, result, tokenizer, device);
        return result;
    }

    private static Tensor ApplyPenalties(Tensor logits, IReadOnlyList<SamplingRow> rows, long vocab)
    {
        var flatRepeat = new List<long>();
        var repeatPenalty = new List<float>();
        var flatCount = new List<long>();
        var countPenalty = new List<float>();
        for (int b = 0; b < rows.Count; b++)
        {
            var options = rows[b].Options;
            if (rows[b].HasRepetitionPenalty)
            {
                foreach (int id in rows[b].Seen)
                {
                    flatRepeat.Add((b * vocab) + id);
                    repeatPenalty.Add((float)options.RepetitionPenalty);
                }
            }

            if (rows[b].HasOccurrencePenalty)
            {
                foreach (var (id, count) in rows[b].Counts)
                {
                    flatCount.Add((b * vocab) + id);
                    countPenalty.Add((float)((options.FrequencyPenalty * count) + options.PresencePenalty));
                }
            }
        }

        if (flatRepeat.Count == 0 && flatCount.Count == 0)
        {
            return logits;
        }

        var result = logits.clone();                                             // [B,V]
        var flat = result.view(-1);                                              // [B*V]
        if (flatRepeat.Count > 0)
        {
            // CTRL: positive logits are divided by the penalty, negative ones multiplied.
            var index = torch.tensor(flatRepeat.ToArray(), device: logits.device);
            var penalty = torch.tensor(repeatPenalty.ToArray(), device: logits.device);
            var values = flat.index_select(0, index);
            flat.index_copy_(0, index, torch.where(values > Scalars.Zero, values / penalty, values * penalty));
        }

        if (flatCount.Count > 0)
        {
            var index = torch.tensor(flatCount.ToArray(), device: logits.device);
            flat.index_add_(0, index, torch.tensor(countPenalty.ToArray(), device: logits.device), Scalars.MinusOne);
        }

        return result;
    }

    private static Tensor ApplyConstraints(Tensor logits, IReadOnlyList<SamplingRow> rows, long vocab, Exception?[] errors)
    {
        var constrained = Enumerable.Range(0, rows.Count).Where(i => rows[i].Constraint is not null).ToArray();
        if (constrained.Length == 0)
        {
            return logits;
        }

        var allowed = new bool[constrained.Length * vocab];
        for (int c = 0; c < constrained.Length; c++)
        {
            var span = allowed.AsSpan((int)(c * vocab), (int)vocab);
            try
            {
                rows[constrained[c]].Constraint!.FillAllowed(span);
            }
            catch (Exception e)
            {
                // That row fails alone; its batch-mates are sampled as if it were not there.
                errors[constrained[c]] = e;
                span.Fill(true);
            }
        }

        var index = torch.tensor(constrained.Select(i => (long)i).ToArray(), device: logits.device); // [C]
        var mask = torch.tensor(allowed, [constrained.Length, vocab]).to(logits.device); // [C,V]
        var masked = logits.index_select(0, index).masked_fill(mask.logical_not(), Scalars.NegativeInfinity); // [C,V]
        return logits.index_copy(0, index, masked);
    }

    /// <summary>
    /// The candidates a sampling row's draw ranks: its top-k (below the vocabulary: <see cref="Draw"/>), every logit
    /// for a top-p cut alone (<see cref="DrawNucleus"/>), 0 without a cut (<see cref="DrawFromAll"/>: nothing to rank).
    /// </summary>
    private static long Candidates(SamplingOptions options, long vocab) =>
        options.TopK > 1 && options.TopK < vocab ? options.TopK
        : options.TopP is > 0 and < 1 ? vocab
        : 0;

    /// <summary>
    /// Temperature alone: an inverse-CDF draw over the softmax of every logit, in id order. Any fixed order draws
    /// from the same distribution, and this one needs no sort: a descending sort of every logit had taken 179 ms
    /// for 64 rows of 50280 logits (about one 8-layer decode step), this 19-26 ms.
    /// </summary>
    private static Tensor DrawFromAll(Tensor logits, SamplingRow[] rows, Device device)
    {
        var temperature = Temperatures(rows, device);                            // [S,1]
        var cdf = (logits / temperature).softmax(-1).to(ScalarType.Float64).cumsum(-1); // [S,V]
        var u = Uniforms(rows, device);                                          // [S,1]
        return Rank(cdf, u);                                                     // [S] ranks are ids here
    }

    /// <summary>Each row's temperature: [S, 1].</summary>
    private static Tensor Temperatures(SamplingRow[] rows, Device device) =>
        torch.tensor(rows.Select(r => (float)r.Options.Temperature).ToArray(), device: device).unsqueeze(1);

    /// <summary>Each row's next uniform draw from its own stream (one a step): [S, 1], float64.</summary>
    private static Tensor Uniforms(SamplingRow[] rows, Device device) =>
        torch.tensor(rows.Select(r => r.NextUniform()).ToArray(), device: device).unsqueeze(1);

    /// <summary>The inverse-CDF draw over cumulative weights [S, K]: the first rank whose weight so far reaches u × the row's total: [S].</summary>
    private static Tensor Rank(Tensor cdf, Tensor u)
    {
        long k = cdf.shape[1];
        var target = u * cdf.narrow(1, k - 1, 1);                                // [S,1]
        using var last = (k - 1).ToScalar();
        return (cdf < target).sum(-1).clamp_max(last);                           // [S]
    }

    /// <summary>
    /// Top-k (every row of the group has this <paramref name="topK"/>): the k most likely logits by partial
    /// selection, ÷ temperature, the top-p cut among them, and an inverse-CDF draw over what is left, most likely
    /// first: ids [S]. As a sort of all 50280 logits a top-k of 40 had taken 161 ms for 64 rows; this 10-15 ms.
    /// </summary>
    private static Tensor Draw(Tensor logits, SamplingRow[] rows, long topK, Device device)
    {
        var temperature = Temperatures(rows, device);                            // [S,1]
        var (best, order) = logits.topk((int)topK, dim: -1, largest: true, sorted: true); // [S,K] most likely first
        var sorted = best / temperature;                                         // [S,K]

        // Ascending cumulative mass <= 1 - top_p removed, i.e. mass strictly above a token >= top_p.
        var p = torch.tensor(rows.Select(r => r.Options.TopP is > 0 and < 1 ? (float)r.Options.TopP : 2f).ToArray(), device: device).unsqueeze(1); // [S,1]
        var probs = sorted.softmax(-1);                                          // [S,K]
        var above = probs.cumsum(-1) - probs;                                    // [S,K]
        sorted = sorted.masked_fill(above >= p, Scalars.NegativeInfinity);

        var cdf = sorted.softmax(-1).to(ScalarType.Float64).cumsum(-1);         // [S,K]
        var u = Uniforms(rows, device);                                          // [S,1]
        return order.gather(1, Rank(cdf, u).unsqueeze(1)).squeeze(1);
    }

    /// <summary>
    /// Candidates a nucleus draw ranks first; a row whose nucleus reaches past them ranks its whole row. 64 rows of
    /// 50280 logits, top_p 0.9 at temperature 0.7: 28-35 ms with nuclei of ~6 or ~150 tokens (256 candidates:
    /// 16-22 ms and 57-74 ms, some rows sorted whole), 161-177 ms where nuclei hold ~22000 (every row sorted).
    /// </summary>
    private const int NucleusCandidates = 1024;

    /// <summary>
    /// Top-p alone: ÷ temperature, the smallest set of most likely tokens whose mass reaches top_p (a mass strictly
    /// above a token of at least top_p removes it: the reference's ascending cumulative mass up to 1 − top_p), and an
    /// inverse-CDF draw over it, most likely first: ids [S]. The probabilities are each logit's share of its whole
    /// row (one logsumexp), summed down the ranks, so the nucleus and the draw are the same whether the ranks come
    /// from the <see cref="NucleusCandidates"/> best (a partial selection) or, where the nucleus reaches past them,
    /// from a sort of the row: a sort of every row had taken 161 ms for 64 rows of 50280 logits.
    /// </summary>
    private static Tensor DrawNucleus(Tensor logits, SamplingRow[] rows, Device device)
    {
        long vocab = logits.shape[1];
        var temperature = Temperatures(rows, device);                            // [S,1]
        var p = torch.tensor(rows.Select(r => (float)r.Options.TopP).ToArray(), device: device).unsqueeze(1); // [S,1]
        var u = Uniforms(rows, device);                                          // [S,1]
        var scaled = logits / temperature;                                       // [S,V]
        var normalizer = scaled.logsumexp(-1, keepdim: true);                    // [S,1]
        // On the CPU the candidates first (the check below costs a host sync, cheap there); elsewhere the sort.
        long candidates = device.type == DeviceType.CPU ? Math.Min(vocab, NucleusCandidates) : vocab;
        var (best, order) = candidates < vocab
            ? scaled.topk((int)candidates, dim: -1, largest: true, sorted: true)  // [S,K] most likely first
            : scaled.sort(-1, descending: true);                                 // [S,V]
        var (picked, reachesPast) = NucleusDraw(best, order, normalizer, p, u);   // [S], [S]
        if (candidates == vocab)
        {
            return picked;
        }

        // Rows whose last candidate is still in the nucleus: it may reach further, so they rank their whole row
        // (the ranks and sums over the candidates are the same there, so the others would draw the same).
        var wide = reachesPast.nonzero().squeeze(1);                             // [W]
        if (wide.shape[0] > 0)
        {
            var (all, allOrder) = scaled.index_select(0, wide).sort(-1, descending: true); // [W,V]
            var (widePicked, _) = NucleusDraw(all, allOrder, normalizer.index_select(0, wide), p.index_select(0, wide), u.index_select(0, wide));
            picked = picked.index_copy(0, wide, widePicked);
        }

        return picked;
    }

    /// <summary>
    /// The nucleus cut and the draw over ranked logits [S, K] (ids in <paramref name="order"/>): ids [S], and
    /// whether each row's last rank is still in its nucleus [S].
    /// </summary>
    private static (Tensor Ids, Tensor ReachesPast) NucleusDraw(Tensor ranked, Tensor order, Tensor normalizer, Tensor p, Tensor u)
    {
        var probs = (ranked - normalizer).exp();                                 // [S,K] shares of the whole row
        var above = probs.cumsum(-1) - probs;                                    // [S,K]
        var removed = above >= p;                                                // [S,K]
        var cdf = probs.masked_fill(removed, 0).to(ScalarType.Float64).cumsum(-1); // [S,K]
        var ids = order.gather(1, Rank(cdf, u).unsqueeze(1)).squeeze(1);          // [S]
        return (ids, removed.narrow(1, ranked.shape[1] - 1, 1).squeeze(1).logical_not());
    }

    private static void AddLogprobs(Tensor adjusted, Tensor chosen, float[]? logSumExp, IReadOnlyList<SamplingRow> rows, SampledToken[] result, Text.CobraTokenizer? tokenizer, Device device)
    {
        var asking = Enumerable.Range(0, rows.Count).Where(i => rows[i].Logprobs).ToArray();
        if (asking.Length == 0)
        {
            return;
        }

        // log p = logit − logsumexp(row): one reduction per row, never a [A, V] log-softmax (at 64 rows it cost
        // as much as 6% of a decode step); the alternatives only when some row asked for them.
        bool all = asking.Length == rows.Count;
        using var index = torch.tensor(asking.Select(i => (long)i).ToArray(), device: device);
        var subset = all ? adjusted : adjusted.index_select(0, index);          // [A,V]
        var normalizer = logSumExp is null ? subset.logsumexp(-1, keepdim: true)  // [A,1]
            : torch.tensor(asking.Select(i => logSumExp[i]).ToArray(), device: device).unsqueeze(1);
        var own = (subset.gather(1, (all ? chosen : chosen.index_select(0, index)).unsqueeze(1)) - normalizer).squeeze(1).cpu().data<float>().ToArray(); // [A]
        int top = asking.Max(i => rows[i].TopLogprobs);
        float[] topValues = [];
        long[] topIds = [];
        if (top > 0)
        {
            var (values, ids) = subset.topk(top, dim: -1);                       // [A,top]
            topValues = (values - normalizer).cpu().data<float>().ToArray();
            topIds = ids.cpu().data<long>().ToArray();
        }

        for (int a = 0; a < asking.Length; a++)
        {
            int row = asking[a];
            var alternatives = Enumerable.Range(0, rows[row].TopLogprobs)
                .Select(j => ToTop(tokenizer, (int)topIds[(a * top) + j], topValues[(a * top) + j]))
                .ToArray();
            var (text, bytes) = TokenText(tokenizer, result[row].Token);
            result[row] = result[row] with { Logprob = new CobraTokenLogprob(text, own[a], bytes, alternatives) };
        }
    }

    private static CobraTopLogprob ToTop(Text.CobraTokenizer? tokenizer, int id, float logprob)
    {
        var (text, bytes) = TokenText(tokenizer, id);
        return new CobraTopLogprob(text, logprob, bytes);
    }

    /// <summary>A token's own text and bytes (padding rows and special tokens decode to nothing).</summary>
    private static (string Text, byte[] Bytes) TokenText(Text.CobraTokenizer? tokenizer, int id)
    {
        if (tokenizer is null || (uint)id >= (uint)tokenizer.VocabularySize)
        {
            return ("", []);
        }

        var bytes = tokenizer.GetTokenBytes(id);
        return (Encoding.UTF8.GetString(bytes), bytes);
    }
}
