namespace Cobra.AI.Generation.Constrained;

/// <summary>
/// Restricts which token may come next in one generation. One instance per answer; not thread-safe; used on the
/// inference thread only.
/// </summary>
internal interface ITokenConstraint
{
    /// <summary>
    /// Writes the tokens that may come next: <c>allowed[id]</c> is set to true for those, false for all others.
    /// Special tokens and padding ids (at or past the tokenizer's vocabulary) are never allowed; the end-of-sequence
    /// token only when the text so far is a complete value.
    /// </summary>
    /// <param name="allowed">One flag per logit row: its length is the padded vocabulary size given at creation.</param>
    /// <exception cref="ArgumentException">The span's length is not the padded vocabulary size.</exception>
    void FillAllowed(Span<bool> allowed);

    /// <summary>Advances past a sampled token.</summary>
    /// <param name="tokenId">The token; must be one <see cref="FillAllowed"/> allowed.</param>
    /// <exception cref="InvalidOperationException">The token was not allowed.</exception>
    void Accept(int tokenId);

    /// <summary>
    /// The value is complete and nothing but the end-of-sequence token may follow; the engine ends the answer
    /// (finish reason stop). Also true once the end-of-sequence token was accepted.
    /// </summary>
    bool IsComplete { get; }
}
