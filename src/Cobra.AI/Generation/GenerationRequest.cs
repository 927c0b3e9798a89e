using Cobra.AI.Imaging;

namespace Cobra.AI.Generation;

/// <summary>One generation for the <see cref="InferenceEngine"/>.</summary>
/// <param name="PromptIds">Prompt token ids (text only; the image comes first in the sequence).</param>
/// <param name="Image">The conversation's image, already decoded, or null.</param>
/// <param name="ImageKey">A stable identity of the image's content (for state reuse), or null.</param>
/// <param name="Sampling">Sampling settings.</param>
/// <param name="StopSequences">Strings that end the answer (not included in it).</param>
internal sealed record GenerationRequest(IReadOnlyList<int> PromptIds, RgbImage? Image, string? ImageKey, SamplingOptions Sampling, IReadOnlyList<string> StopSequences);

/// <summary>Something the engine reports about a request, in order: text deltas, then one completion.</summary>
internal abstract record GenerationEvent;

/// <summary>New answer text (whole characters, never retracted).</summary>
/// <param name="Text">The delta.</param>
internal sealed record TextGenerated(string Text) : GenerationEvent;

/// <summary>The request finished.</summary>
/// <param name="Reason">Why.</param>
/// <param name="InputTokens">LLM input positions: image tokens plus prompt tokens.</param>
/// <param name="CachedInputTokens">Input positions taken from a cached conversation state.</param>
/// <param name="OutputTokens">Generated tokens (including the end-of-text token when produced).</param>
/// <param name="OutputIds">The generated ids.</param>
internal sealed record GenerationCompleted(FinishReason Reason, int InputTokens, int CachedInputTokens, int OutputTokens, IReadOnlyList<int> OutputIds) : GenerationEvent;
