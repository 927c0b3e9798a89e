using Cobra.AI.Generation.Constrained;
using Cobra.AI.Generation;
using Cobra.AI.Modeling;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Generation;

public sealed class SamplerTests
{
    public SamplerTests() => TorchRuntime.EnsureInitialized();

    private static Tensor Logits(params float[] values) => torch.tensor(values).unsqueeze(0);

    private static SamplingRow Row(SamplingOptions options, int choice = 0, ITokenConstraint? constraint = null, IReadOnlyList<int>? prompt = null) =>
        new(options, prompt ?? [], choice, constraint, logprobs: false, topLogprobs: 0);

    /// <summary>Draws <paramref name="count"/> tokens for one row, feeding each back as the row's output.</summary>
    private static long[] Draw(SamplingOptions options, Tensor logits, int count)
    {
        options.Validate();
        var row = Row(options);
        return Enumerable.Range(0, count).Select(_ => (long)BatchSampler.Sample(logits, [row], null)[0].Token).ToArray();
    }

    [Fact]
    public void Greedy_is_argmax_over_every_logit_including_padding_rows()
    {
        using var scope = torch.NewDisposeScope();
        var logits = Logits(0.1f, 2f, -1f, 3f);
        Assert.All(Draw(SamplingOptions.Greedy, logits, 3), id => Assert.Equal(3, id));
        Assert.All(Draw(new SamplingOptions { Temperature = 1.0, TopK = 1 }, logits, 3), id => Assert.Equal(3, id));
    }

    [Fact]
    public void Top_k_samples_only_among_the_k_best()
    {
        using var scope = torch.NewDisposeScope();
        var draws = Draw(new SamplingOptions { Temperature = 5, TopK = 2, Seed = 1 }, Logits(1f, 1.2f, 0.9f, 1.1f), 400);
        Assert.All(draws, id => Assert.Contains(id, new long[] { 1, 3 }));
        Assert.Contains(1L, draws);
        Assert.Contains(3L, draws);
    }

    [Fact]
    public void Top_p_keeps_only_the_nucleus()
    {
        using var scope = torch.NewDisposeScope();
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps ids 0 and 1 only.
        var logits = Logits(3f, 2f, 1f, 0f);
        var draws = Draw(new SamplingOptions { Temperature = 1, TopP = 0.8, Seed = 3 }, logits, 500);
        Assert.All(draws, id => Assert.InRange(id, 0, 1));
        Assert.Contains(1L, draws);
    }

    [Fact]
    public void Same_seed_same_draws_and_frequencies_follow_the_softmax()
    {
        using var scope = torch.NewDisposeScope();
        var logits = Logits(0f, MathF.Log(3f));                                  // p = [0.25, 0.75]
        var options = new SamplingOptions { Temperature = 1, Seed = 42 };
        var a = Draw(options, logits, 2000);
        Assert.Equal(a, Draw(options, logits, 2000));
        Assert.InRange(a.Count(id => id == 1) / 2000.0, 0.70, 0.80);
    }

    [Fact]
    public void Rows_keep_their_own_settings_and_seeds_whatever_shares_the_batch()
    {
        using var scope = torch.NewDisposeScope();
        var one = torch.tensor(new float[] { 0f, 0.5f, 0.2f, 0.4f, 0.1f });
        var seeded = new SamplingOptions { Temperature = 2, Seed = 7 };
        var alone = Row(seeded);
        var aloneDraws = Enumerable.Range(0, 50).Select(_ => BatchSampler.Sample(one.unsqueeze(0), [alone], null)[0].Token).ToArray();

        // The same seeded row beside a greedy row and a top-k row: its draws do not change; the others follow their own rules.
        var rows = new[] { Row(SamplingOptions.Greedy), Row(seeded), Row(new SamplingOptions { Temperature = 1, TopK = 2, Seed = 1 }) };
        var batch = torch.stack([one, one, one]);                                 // [3,V]
        var draws = Enumerable.Range(0, 50).Select(_ => BatchSampler.Sample(batch, rows, null)).ToArray();
        Assert.All(draws, d => Assert.Equal(1, d[0].Token));
        Assert.Equal(aloneDraws, draws.Select(d => d[1].Token));
        Assert.All(draws, d => Assert.Contains(d[2].Token, new[] { 1, 3 }));

        // Choice i of a request draws from seed + i: different streams for different choices.
        var second = Row(seeded, choice: 1);
        var secondDraws = Enumerable.Range(0, 50).Select(_ => BatchSampler.Sample(one.unsqueeze(0), [second], null)[0].Token).ToArray();
        Assert.NotEqual(aloneDraws, secondDraws);
    }

    [Fact]
    public void Top_k_draws_follow_the_softmax_of_the_k_best_and_top_p_cuts_within_them()
    {
        using var scope = torch.NewDisposeScope();
        // Ids 4, 1, 5 are the three best: softmax over them ~ [0.665, 0.245, 0.090].
        var logits = Logits(-1f, 2f, -3f, 0f, 3f, 1f);
        var draws = Draw(new SamplingOptions { Temperature = 1, TopK = 3, Seed = 5 }, logits, 3000);
        Assert.All(draws, id => Assert.Contains(id, new long[] { 4, 1, 5 }));
        Assert.InRange(draws.Count(id => id == 4) / 3000.0, 0.62, 0.71);
        Assert.InRange(draws.Count(id => id == 5) / 3000.0, 0.06, 0.12);

        // top_p 0.8 inside the top 3: the mass above id 5 is 0.91 >= 0.8, so it goes; ids 4 and 1 stay.
        var nucleus = Draw(new SamplingOptions { Temperature = 1, TopK = 3, TopP = 0.8, Seed = 5 }, logits, 1000);
        Assert.All(nucleus, id => Assert.Contains(id, new long[] { 4, 1 }));
        Assert.Contains(1L, nucleus);
    }

    [Fact]
    public void Top_p_alone_ranks_its_best_candidates_and_the_whole_row_where_the_nucleus_is_wider()
    {
        using var scope = torch.NewDisposeScope();
        const int Vocab = 3000;
        var ids = torch.arange(Vocab, dtype: ScalarType.Float32);
        var peaked = ids * -0.05f;                                                // nucleus of top_p 0.9: ~46 ids
        var flat = ids * -1e-4f;                                                  // ~2700 ids: past the candidates ranked first
        var options = new SamplingOptions { Temperature = 1, TopP = 0.9, Seed = 11 };
        int[] Nucleus(Tensor logits)
        {
            double[] p = logits.to(ScalarType.Float64).softmax(-1).data<double>().ToArray();
            double above = 0;
            var kept = new List<int>();
            foreach (int id in Enumerable.Range(0, Vocab).OrderByDescending(i => p[i]))
            {
                if (above >= 0.9)
                {
                    break;
                }

                kept.Add(id);
                above += p[id];
            }

            return [.. kept];
        }

        var peakedRow = Row(options);
        var flatRow = Row(options with { Seed = 12 });
        var alone = Enumerable.Range(0, 300).Select(_ => (BatchSampler.Sample(peaked.unsqueeze(0), [peakedRow], null)[0].Token, BatchSampler.Sample(flat.unsqueeze(0), [flatRow], null)[0].Token)).ToArray();
        var nucleus = Nucleus(peaked);
        var wide = Nucleus(flat);
        Assert.InRange(nucleus.Length, 30, 60);
        Assert.InRange(wide.Length, 2000, Vocab - 1);
        Assert.All(alone, d => Assert.Contains(d.Item1, nucleus));
        Assert.All(alone, d => Assert.Contains(d.Item2, wide));
        Assert.Contains(alone, d => d.Item2 >= 1500);                           // ranked past the first candidates

        // Both in one batch (one ranks its candidates, the other its whole row): the same draws as alone.
        var rows = new[] { Row(options), Row(options with { Seed = 12 }) };
        var batch = torch.stack([peaked, flat]);                                 // [2,V]
        var together = Enumerable.Range(0, 300).Select(_ => BatchSampler.Sample(batch, rows, null)).Select(d => (d[0].Token, d[1].Token)).ToArray();
        Assert.Equal(alone, together);
    }

    [Fact]
    public void Every_kind_of_row_draws_the_same_alone_and_in_a_mixed_batch()
    {
        using var scope = torch.NewDisposeScope();
        var one = torch.tensor(new float[] { 0f, 0.5f, 0.2f, 0.4f, 0.1f, -0.3f, 0.45f });
        var options = new[]
        {
            new SamplingOptions { Temperature = 2, Seed = 7 },                    // every logit, in id order
            new SamplingOptions { Temperature = 1, TopK = 2, Seed = 1 },          // a top-k of 2
            new SamplingOptions { Temperature = 1.5, TopK = 4, Seed = 2 },        // another k: its own group
            new SamplingOptions { Temperature = 1, TopP = 0.7, Seed = 3 },        // top-p alone: the whole row ranked
            new SamplingOptions { Temperature = 0.8, TopK = 3, TopP = 0.6, Seed = 4 },
            SamplingOptions.Greedy,
        };
        int[][] Alone(SamplingOptions o)
        {
            var row = Row(o);
            return Enumerable.Range(0, 40).Select(_ => new[] { BatchSampler.Sample(one.unsqueeze(0), [row], null)[0].Token }).ToArray();
        }

        var alone = options.Select(Alone).ToArray();
        var rows = options.Select(o => Row(o)).Reverse().ToArray();               // another order in the batch
        var batch = torch.stack(rows.Select(_ => one).ToArray());                // [6,V]
        var draws = Enumerable.Range(0, 40).Select(_ => BatchSampler.Sample(batch, rows, null)).ToArray();
        for (int o = 0; o < options.Length; o++)
        {
            int inBatch = options.Length - 1 - o;
            Assert.Equal(alone[o].Select(d => d[0]), draws.Select(d => d[inBatch].Token));
        }

        Assert.All(draws, d => Assert.Contains(d[options.Length - 1 - 1].Token, new[] { 1, 6 })); // top-k 2: ids 1 and 6
    }

    [Fact]
    public void Penalties_apply_per_row_from_each_rows_own_history()
    {
        using var scope = torch.NewDisposeScope();
        var logits = torch.tensor(new float[] { 1.0f, 0.9f, 0.2f }).unsqueeze(0).expand(2, -1).contiguous(); // [2,V]
        var repeating = Row(SamplingOptions.Greedy with { RepetitionPenalty = 2.0 }, prompt: [0]);
        var plain = Row(SamplingOptions.Greedy);
        var first = BatchSampler.Sample(logits, [repeating, plain], null);
        Assert.Equal(1, first[0].Token);                                         // 1.0 / 2 < 0.9: the prompt's token is penalised
        Assert.Equal(0, first[1].Token);

        var frequency = Row(SamplingOptions.Greedy with { FrequencyPenalty = 0.5 });
        frequency.Accept(0);
        Assert.Equal(1, BatchSampler.Sample(logits.narrow(0, 0, 1), [frequency], null)[0].Token);   // 1.0 - 0.5 < 0.9
    }

    [Fact]
    public void A_constraint_masks_only_its_own_row()
    {
        using var scope = torch.NewDisposeScope();
        var logits = torch.tensor(new float[] { 3f, 2f, 1f, 0f }).unsqueeze(0).expand(2, -1).contiguous();
        var onlyTwo = new AllowOnly(2);
        var result = BatchSampler.Sample(logits, [Row(SamplingOptions.Greedy), Row(SamplingOptions.Greedy, constraint: onlyTwo)], null);
        Assert.Equal(0, result[0].Token);
        Assert.Equal(2, result[1].Token);
    }

    [Fact]
    public void Logprobs_are_the_log_softmax_of_the_adjusted_logits()
    {
        using var scope = torch.NewDisposeScope();
        var row = new SamplingRow(SamplingOptions.Greedy, [], 0, null, logprobs: true, topLogprobs: 2);
        var result = BatchSampler.Sample(Logits(0f, MathF.Log(3f)), [row], null)[0];
        Assert.Equal(1, result.Token);
        Assert.Equal(Math.Log(0.75), result.Logprob!.Logprob, 4);
        Assert.Equal(2, result.Logprob.TopLogprobs.Count);
        Assert.Equal(Math.Log(0.25), result.Logprob.TopLogprobs[1].Logprob, 4);
    }

    [Theory]
    [InlineData(0, 1.0, 0, 0.0)]
    [InlineData(5, -0.5, 0, 0.0)]
    [InlineData(5, double.NaN, 0, 0.0)]
    [InlineData(5, 1.0, -1, 0.0)]
    [InlineData(5, 1.0, 0, 1.5)]
    public void Invalid_settings_are_rejected_by_name(int maxNewTokens, double temperature, int topK, double topP)
    {
        var options = new SamplingOptions { MaxNewTokens = maxNewTokens, Temperature = temperature, TopK = topK, TopP = topP };
        var e = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);
        Assert.False(string.IsNullOrEmpty(e.ParamName));
    }

    private sealed class AllowOnly(int id) : ITokenConstraint
    {
        public bool IsComplete => false;

        public void FillAllowed(Span<bool> allowed) => allowed[id] = true;

        public void Accept(int tokenId) => Assert.Equal(id, tokenId);
    }
}
