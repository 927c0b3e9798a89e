namespace Cobra.AI.Generation.Constrained;

/// <summary>
/// Keeps one answer within a <see cref="JsonGrammar"/>: masks are computed by walking the vocabulary trie with the
/// matcher, pruning every prefix the grammar rejects.
/// </summary>
internal sealed class JsonTokenConstraint : ITokenConstraint
{
    private readonly JsonGrammar _grammar;
    private readonly VocabularyTrie _vocabulary;
    private readonly int _eosTokenId;
    private readonly int _paddedVocabSize;
    private readonly JsonMatchState[] _walk;
    private JsonMatchState _state;
    private bool _ended;
    private bool? _complete;

    public JsonTokenConstraint(JsonGrammar grammar, VocabularyTrie vocabulary, int eosTokenId, int paddedVocabSize)
    {
        _grammar = grammar;
        _vocabulary = vocabulary;
        _eosTokenId = eosTokenId;
        _paddedVocabSize = paddedVocabSize;
        _walk = new JsonMatchState[vocabulary.MaxDepth + 1];
        _state = JsonMatcher.Start(grammar);
    }

    /// <inheritdoc/>
    public bool IsComplete => _ended || (_complete ??= JsonMatcher.IsAccepting(in _state) && !JsonMatcher.CanContinue(in _state));

    /// <inheritdoc/>
    public void FillAllowed(Span<bool> allowed)
    {
        if (allowed.Length != _paddedVocabSize)
        {
            throw new ArgumentException($"The mask has {allowed.Length} entries; the padded vocabulary has {_paddedVocabSize}.", nameof(allowed));
        }

        allowed.Clear();
        if (_ended || JsonMatcher.IsAccepting(in _state))
        {
            allowed[_eosTokenId] = true;
        }

        if (_ended)
        {
            return;
        }

        byte[] nodeByte = _vocabulary.NodeByte;
        int[] nodeDepth = _vocabulary.NodeDepth;
        int[] subtreeEnd = _vocabulary.SubtreeEnd;
        int[] tokenStart = _vocabulary.TokenStart;
        int[] tokenIds = _vocabulary.TokenIds;
        JsonMatchState[] walk = _walk;
        walk[0] = _state;
        int count = nodeByte.Length;
        int n = 1;
        while (n < count)
        {
            int depth = nodeDepth[n];
            ref JsonMatchState next = ref walk[depth];
            next = walk[depth - 1];
            if (!JsonMatcher.Step(ref next, nodeByte[n]))
            {
                n = subtreeEnd[n];
                continue;
            }

            for (int t = tokenStart[n], end = tokenStart[n + 1]; t < end; t++)
            {
                allowed[tokenIds[t]] = true;
            }

            n++;
        }
    }

    /// <inheritdoc/>
    public void Accept(int tokenId)
    {
        if (_ended)
        {
            throw new InvalidOperationException($"Token {tokenId} was not allowed: the answer already ended.");
        }

        if (tokenId == _eosTokenId)
        {
            if (!JsonMatcher.IsAccepting(in _state))
            {
                throw new InvalidOperationException($"The end-of-sequence token {tokenId} was not allowed: the JSON value is not complete.");
            }

            _ended = true;
            return;
        }

        byte[]? bytes = (uint)tokenId < (uint)_vocabulary.TokenBytes.Length ? _vocabulary.TokenBytes[tokenId] : null;
        if (bytes is null)
        {
            throw new InvalidOperationException($"Token {tokenId} was not allowed: special tokens and padding ids never are under a JSON response format.");
        }

        JsonMatchState state = _state;
        foreach (byte b in bytes)
        {
            if (!JsonMatcher.Step(ref state, b))
            {
                throw new InvalidOperationException($"Token {tokenId} was not allowed by the JSON response format at this point.");
            }
        }

        _state = state;
        _complete = null;
    }

    /// <summary>The grammar.</summary>
    public JsonGrammar Grammar => _grammar;

    /// <summary>Whether the next byte is inside a string (for the bench's breakdown).</summary>
    public bool InString => _state.Scalar is ScalarKind.String or ScalarKind.FreeKey;
}
