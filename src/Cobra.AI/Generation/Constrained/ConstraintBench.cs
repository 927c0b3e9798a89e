using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Cobra.AI.Text;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Generation.Constrained;

/// <summary>What <see cref="ConstraintBench.Run"/> measured.</summary>
/// <param name="Masks">Masks computed.</param>
/// <param name="MeanMilliseconds">Mean time of one mask.</param>
/// <param name="MaxMilliseconds">Slowest mask.</param>
/// <param name="StringMeanMilliseconds">Mean over masks computed inside strings (the costliest state: almost every token fits).</param>
/// <param name="BudgetedMeanMilliseconds">Mean with a token budget (MaxOutputTokens) being enforced.</param>
/// <param name="WorstMilliseconds">
/// Mean of the costliest state: inside a string below its minLength, where the whole trie is walked (no fast path).
/// </param>
/// <param name="AllowedPerMask">Mean number of allowed tokens.</param>
/// <param name="VocabularyTrieNodes">Nodes of the vocabulary trie.</param>
/// <param name="TrieBuildMilliseconds">Building the vocabulary trie: paid once per tokenizer, by the first JSON request.</param>
internal sealed record ConstraintBenchResult(
    int Masks, double MeanMilliseconds, double MaxMilliseconds, double StringMeanMilliseconds, double BudgetedMeanMilliseconds, double WorstMilliseconds, double AllowedPerMask, int VocabularyTrieNodes, double TrieBuildMilliseconds)
{
    /// <inheritdoc/>
    public override string ToString() => string.Create(
        CultureInfo.InvariantCulture,
        $"constrained decoding: {Masks} masks, {MeanMilliseconds:F3} ms mean, {MaxMilliseconds:F3} ms max, {StringMeanMilliseconds:F3} ms mean inside strings, {BudgetedMeanMilliseconds:F3} ms mean with a token budget, {WorstMilliseconds:F3} ms in the costliest state (whole trie), {AllowedPerMask:F0} tokens allowed on average, {VocabularyTrieNodes} trie nodes built in {TrieBuildMilliseconds:F0} ms");
}

/// <summary>
/// Measures the cost of one token mask on a real vocabulary, for <c>cobra bench</c>: a schema answer (object,
/// strings, numbers, enum, array) is fed token by token and every step's mask is timed.
/// </summary>
internal static class ConstraintBench
{
    private const string Schema = """
        {"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"height":{"type":"number"},
        "nick":{"type":["string","null"]},"fav":{"type":"string","enum":["Red","Green","Blue"]},
        "tags":{"type":"array","items":{"type":"string"}},"notes":{"type":"string"}},
        "required":["name","age","height","nick","fav","tags","notes"]}
        """;

    private const string Answer = """
        {"name":"Ada Lovelace","age":36,"height":1.65,"nick":null,"fav":"Green","tags":["math","poetry","engines"],"notes":"She wrote the first published algorithm for Babbage's Analytical Engine, and saw that it could do more than arithmetic."}
        """;

    /// <summary>Times masks along a schema answer, repeating it until <paramref name="masks"/> masks were computed.</summary>
    /// <param name="tokenizer">The tokenizer (GPT-NeoX for the real number).</param>
    /// <param name="paddedVocabSize">Logit rows.</param>
    /// <param name="masks">Masks to time (at least one answer's worth).</param>
    /// <returns>The measurement.</returns>
    public static ConstraintBenchResult Run(CobraTokenizer tokenizer, int paddedVocabSize, int masks)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfLessThan(masks, 1);
        using JsonDocument schema = JsonDocument.Parse(Schema);
        Func<ITokenConstraint> factory = JsonConstraints.Compile(ChatResponseFormat.ForJsonSchema(schema.RootElement.Clone()), tokenizer, paddedVocabSize)!;
        IReadOnlyList<int> ids = tokenizer.Encode(Answer);
        var allowed = new bool[paddedVocabSize];

        // One untimed pass warms the JIT.
        RunOnce(factory(), ids, allowed, null);
        var times = new List<(double Ms, bool InString, int Allowed)>();
        while (times.Count < masks)
        {
            RunOnce(factory(), ids, allowed, times);
        }

        // The same answer under a budget just big enough for it: every allowed token's completion is checked.
        Func<ITokenConstraint> budgeted = JsonConstraints.Compile(ChatResponseFormat.ForJsonSchema(schema.RootElement.Clone()), tokenizer, paddedVocabSize, ids.Count + 8)!;
        var budgetedTimes = new List<(double Ms, bool InString, int Allowed)>();
        while (budgetedTimes.Count < masks)
        {
            RunOnce(budgeted(), ids, allowed, budgetedTimes);
        }

        using JsonDocument worstSchema = JsonDocument.Parse("""{"type":"string","minLength":100000}""");
        Func<ITokenConstraint> worst = JsonConstraints.Compile(ChatResponseFormat.ForJsonSchema(worstSchema.RootElement.Clone()), tokenizer, paddedVocabSize)!;
        ITokenConstraint inside = worst();
        inside.Accept(tokenizer.Encode("\"")[0]);
        var clock = Stopwatch.StartNew();
        int worstRuns = Math.Max(5, masks / 10);
        for (int i = 0; i < worstRuns; i++)
        {
            inside.FillAllowed(allowed);
        }

        double worstMs = clock.Elapsed.TotalMilliseconds / worstRuns;
        clock.Restart();
        VocabularyTrie.Build(tokenizer);
        double buildMs = clock.Elapsed.TotalMilliseconds;
        double mean = times.Average(t => t.Ms);
        double inString = times.Where(t => t.InString).Select(t => t.Ms).DefaultIfEmpty(0).Average();
        return new ConstraintBenchResult(
            times.Count, mean, times.Max(t => t.Ms), inString, budgetedTimes.Average(t => t.Ms), worstMs, times.Average(t => t.Allowed), VocabularyTrie.For(tokenizer).NodeCount, buildMs);
    }

    private static void RunOnce(ITokenConstraint constraint, IReadOnlyList<int> ids, bool[] allowed, List<(double, bool, int)>? times)
    {
        var clock = new Stopwatch();
        var state = (JsonTokenConstraint)constraint;
        foreach (int id in ids)
        {
            clock.Restart();
            constraint.FillAllowed(allowed);
            clock.Stop();
            if (!allowed[id])
            {
                throw new InvalidOperationException($"The bench answer's token {id} was refused; the constraint and the bench disagree.");
            }

            times?.Add((clock.Elapsed.TotalMilliseconds, state.InString, allowed.Count(a => a)));
            constraint.Accept(id);
        }
    }
}
