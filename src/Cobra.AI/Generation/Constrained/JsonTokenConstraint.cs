namespace Cobra.AI.Generation.Constrained;

/// <summary>
/// Keeps one answer within a <see cref="JsonGrammar"/>: masks are computed by walking the vocabulary trie with the
/// matcher, pruning every prefix the grammar rejects.
/// </summary>
internal sealed class JsonTokenConstraint : ITokenConstraint
{
    private readonly VocabularyTrie _vocabulary;
    private readonly int _eosTokenId;
    private readonly int _paddedVocabSize;
    private readonly JsonMatchState[] _walk;
    private readonly int _maxTokens;
    private int _used;
    private JsonMatchState _state;
    private bool _ended;
    private bool? _complete;

    /// <param name="grammar">The grammar.</param>
    /// <param name="vocabulary">The tokenizer's trie.</param>
    /// <param name="eosTokenId">End of sequence.</param>
    /// <param name="paddedVocabSize">Logit rows.</param>
    /// <param name="maxTokens">
    /// Token budget of the answer (int.MaxValue: none). When the vocabulary has a token for every byte and the
    /// shortest value fits, the mask keeps a completion within the budget: once tokens run short, only those after
    /// which the shortest completion (one token per byte) still fits are allowed, so the value ends in time.
    /// </param>
    public JsonTokenConstraint(JsonGrammar grammar, VocabularyTrie vocabulary, int eosTokenId, int paddedVocabSize, int maxTokens = int.MaxValue)
    {
        _vocabulary = vocabulary;
        _eosTokenId = eosTokenId;
        _paddedVocabSize = paddedVocabSize;
        _walk = new JsonMatchState[vocabulary.MaxDepth + 1];
        _state = JsonMatcher.Start(grammar);
        _maxTokens = vocabulary.HasEveryByte && grammar.Root.MinBytes <= maxTokens ? maxTokens : int.MaxValue;
    }

    /// <inheritdoc/>
    public bool IsComplete => _ended
        || (_complete ??= JsonMatcher.IsAccepting(in _state) && (_used >= _maxTokens || !JsonMatcher.CanContinue(in _state)));

    /// <inheritdoc/>
    public void FillAllowed(Span<bool> allowed)
    {
        if (allowed.Length != _paddedVocabSize)
        {
            throw new ArgumentException($"The mask has {allowed.Length} entries; the padded vocabulary has {_paddedVocabSize}.", nameof(allowed));
        }

        allowed.Clear();
        bool eos = _ended || JsonMatcher.IsAccepting(in _state);
        if (!_ended && !Walk(allowed, budgeted: _maxTokens != int.MaxValue) && !eos)
        {
            // The budget left nothing (past it, or an estimate gone wrong): better a long answer than none.
            Walk(allowed, budgeted: false);
        }

        // Last: the plain-token copy above writes the low ids wholesale.
        allowed[_eosTokenId] = eos;
    }

    private bool Walk(Span<bool> allowed, bool budgeted)
    {
        long budget = _maxTokens - (long)_used - 1; // bytes the shortest completion may take after the next token
        if (budgeted && budget < 0)
        {
            return false;
        }

        bool any = false;
        VocabularyTrie trie = _vocabulary;
        int room = JsonMatcher.PlainStringRoom(in _state);
        if (room >= 0)
        {
            // Inside a string nearly every token fits: take the precomputed plain ones (those short enough) wholesale
            // and walk only the trie of the rest (quotes, backslashes, controls, partial UTF-8).
            // A plain token leaves the shortest completion as it was.
            int[] prefix = _vocabulary.PlainUnitsPrefix;
            bool plainFits = !budgeted || JsonMatcher.MinCompletion(in _state) <= budget;
            if (plainFits && room >= prefix.Length - 1)
            {
                _vocabulary.PlainMask.CopyTo(allowed);
                any = true;
            }
            else if (plainFits)
            {
                int[] byUnits = _vocabulary.PlainByUnits;
                for (int i = 0, end = prefix[room]; i < end; i++)
                {
                    allowed[byUnits[i]] = true;
                    any = true;
                }
            }

            trie = _vocabulary.NonPlain;
        }

        byte[] nodeByte = trie.NodeByte;
        int[] nodeDepth = trie.NodeDepth;
        int[] subtreeEnd = trie.SubtreeEnd;
        int[] tokenStart = trie.TokenStart;
        int[] tokenIds = trie.TokenIds;
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

            int first = tokenStart[n], end = tokenStart[n + 1];
            if (first < end && (!budgeted || JsonMatcher.MinCompletion(in next) <= budget))
            {
                any = true;
                for (int t = first; t < end; t++)
                {
                    allowed[tokenIds[t]] = true;
                }
            }

            n++;
        }

        return any;
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
        _used++;
        _complete = null;
    }

    /// <summary>Whether the next byte is inside a string (for the bench's breakdown).</summary>
    public bool InString => _state.Scalar is ScalarKind.String or ScalarKind.FreeKey;
}
