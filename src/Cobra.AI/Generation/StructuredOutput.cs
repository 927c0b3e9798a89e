using Cobra.AI.Text;
using Microsoft.Extensions.AI;

namespace Cobra.AI.Generation;

/// <summary>Turns <see cref="ChatOptions.ResponseFormat"/> into a per-choice token constraint.</summary>
internal static class StructuredOutput
{
    /// <summary>Null for text; a constraint factory for JSON; <see cref="NotSupportedException"/> for what cannot be enforced.</summary>
    public static Func<ITokenConstraint>? Compile(ChatResponseFormat? format, CobraTokenizer tokenizer, int paddedVocabSize) => format switch
    {
        null or ChatResponseFormatText => null,
        _ => throw new NotSupportedException("ChatOptions.ResponseFormat JSON is not enforced by this build yet; Cobra refuses it rather than return unconstrained text."),
    };
}
