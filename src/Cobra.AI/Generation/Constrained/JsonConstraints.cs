using System.Text.Json;
using Cobra.AI.Text;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Generation.Constrained;

/// <summary>
/// Turns a <see cref="ChatResponseFormat"/> into per-answer token constraints: <see cref="ChatResponseFormat.Json"/>
/// gives any JSON object (at most <see cref="JsonGrammar.MaxNestingDepth"/> nested containers), a JSON schema gives
/// values that validate against it (the subset <see cref="SchemaCompiler"/> documents).
/// </summary>
internal static class JsonConstraints
{
    /// <summary>Compiled schemas kept, by schema text (least recently used dropped first).</summary>
    public const int CacheCapacity = 64;

    private static readonly LinkedList<(string Key, JsonGrammar Grammar)> Order = new();
    private static readonly Dictionary<string, LinkedListNode<(string Key, JsonGrammar Grammar)>> ByKey = new(StringComparer.Ordinal);
    private static readonly Lock CacheLock = new();

    /// <summary>Compiles a response format once per request; the factory makes one constraint per answer.</summary>
    /// <param name="format">The request's format; null or text means unconstrained.</param>
    /// <param name="tokenizer">The model's tokenizer (its vocabulary trie is built on first use and kept).</param>
    /// <param name="paddedVocabSize">Logit rows (the vocabulary padded for the embedding); at least the tokenizer's vocabulary.</param>
    /// <param name="maxOutputTokens">
    /// The answer's token budget (MaxOutputTokens), or null for none: the constraints then steer the value to end
    /// within it whenever its shortest form fits, so the budget does not cut a value off.
    /// </param>
    /// <returns>A factory of constraints (one per answer), or null when the format does not constrain.</returns>
    /// <exception cref="NotSupportedException">A schema keyword cannot be enforced (the message names it and where), or the format type is unknown.</exception>
    /// <exception cref="ArgumentException">The schema is malformed or admits no value.</exception>
    public static Func<ITokenConstraint>? Compile(ChatResponseFormat? format, CobraTokenizer tokenizer, int paddedVocabSize, int? maxOutputTokens = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (maxOutputTokens is < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(maxOutputTokens), maxOutputTokens, "The token budget must be at least 1.");
        }

        if (paddedVocabSize < tokenizer.VocabularySize)
        {
            throw new ArgumentOutOfRangeException(nameof(paddedVocabSize), paddedVocabSize, $"The padded vocabulary must hold the tokenizer's {tokenizer.VocabularySize} tokens.");
        }

        JsonGrammar grammar;
        switch (format)
        {
            case null:
            case ChatResponseFormatText:
                return null;
            case ChatResponseFormatJson { Schema: null }:
                grammar = JsonGrammar.AnyObject;
                break;
            case ChatResponseFormatJson { Schema: JsonElement schema }:
                grammar = GetOrCompile(schema);
                break;
            default:
                throw new NotSupportedException($"Response format '{format.GetType().Name}' is not supported; use text, JSON, or a JSON schema.");
        }

        VocabularyTrie vocabulary = VocabularyTrie.For(tokenizer);
        int eos = tokenizer.EosTokenId;
        int budget = maxOutputTokens ?? int.MaxValue;
        return () => new JsonTokenConstraint(grammar, vocabulary, eos, paddedVocabSize, budget);
    }

    /// <summary>Compiles a schema, or returns the cached grammar for the same schema text.</summary>
    internal static JsonGrammar GetOrCompile(JsonElement schema)
    {
        string key = schema.GetRawText();
        lock (CacheLock)
        {
            if (ByKey.TryGetValue(key, out LinkedListNode<(string Key, JsonGrammar Grammar)>? hit))
            {
                Order.Remove(hit);
                Order.AddFirst(hit);
                return hit.Value.Grammar;
            }
        }

        // Compile outside the lock; two racing requests for one new schema both compile, harmlessly.
        JsonGrammar grammar = SchemaCompiler.Compile(schema);
        lock (CacheLock)
        {
            if (!ByKey.ContainsKey(key))
            {
                ByKey[key] = Order.AddFirst((key, grammar));
                if (Order.Count > CacheCapacity)
                {
                    ByKey.Remove(Order.Last!.Value.Key);
                    Order.RemoveLast();
                }
            }
        }

        return grammar;
    }
}
