namespace Cobra.AI.Generation;

/// <summary>
/// A per-choice restriction of the next token (structured output). One instance per choice, used on the
/// inference thread only.
/// </summary>
internal interface ITokenConstraint
{
    /// <summary>True once the constrained value is complete: the engine ends the choice.</summary>
    bool IsComplete { get; }

    /// <summary>Writes the allowed next tokens (<c>allowed[id] = true</c>); <paramref name="allowed"/> spans the padded vocabulary and arrives cleared.</summary>
    void FillAllowed(Span<bool> allowed);

    /// <summary>Advances past <paramref name="tokenId"/>; throws <see cref="InvalidOperationException"/> if it was not allowed.</summary>
    void Accept(int tokenId);
}
