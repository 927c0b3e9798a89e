using Cobra.AI.Generation.Constrained;
namespace Cobra.AI.Generation;

/// <summary>Why a choice stopped, in OpenAI's vocabulary.</summary>
internal enum FinishReason
{
    /// <summary>The end-of-text token, a stop sequence, or a complete constrained value.</summary>
    Stop,

    /// <summary>The token limit was reached (inside a constrained value too: then the value is incomplete).</summary>
    Length,
}

/// <summary>One generation for the <see cref="InferenceEngine"/>.</summary>
/// <param name="PromptIds">Prompt token ids (text only; the image comes first in the sequence).</param>
/// <param name="Image">The conversation's image, already resized for the towers (<see cref="CobraPipeline.ResizeForTowers"/>), or null.</param>
/// <param name="ImageKey">A stable identity of the image's content (for state reuse), or null.</param>
/// <param name="Sampling">Sampling settings (choice i samples with seed <c>Seed + i</c>).</param>
/// <param name="StopSequences">Strings that end the answer (not included in it).</param>
internal sealed record GenerationRequest(IReadOnlyList<int> PromptIds, TowerImages? Image, string? ImageKey, SamplingOptions Sampling, IReadOnlyList<string> StopSequences)
{
    /// <summary>Completions forked from the one prefill (n).</summary>
    public int Choices { get; init; } = 1;

    /// <summary>Report each token's log-probability.</summary>
    public bool Logprobs { get; init; }

    /// <summary>Alternatives reported per token when <see cref="Logprobs"/> is set.</summary>
    public int TopLogprobs { get; init; }

    /// <summary>Makes the per-choice output constraint (structured output), or null for free text.</summary>
    public Func<ITokenConstraint>? Constraint { get; init; }

    /// <summary>Copy the float32 logits that chose each token into <see cref="ChoiceCompleted.Logits"/> (the CLI's --logits-out).</summary>
    public bool CaptureLogits { get; init; }

    /// <summary>A snapshot of a prefix of this conversation from the distributed state store, not yet decoded (issue 13).</summary>
    public StateStore.RemoteSnapshot? Remote { get; init; }
}

/// <summary>Something the engine reports about a request, in order: text deltas, each choice's end, then one completion.</summary>
internal abstract record GenerationEvent;

/// <summary>New answer text of one choice (whole characters, never retracted).</summary>
/// <param name="Text">The delta (may be empty when only log-probabilities arrived).</param>
/// <param name="Choice">0-based choice index.</param>
/// <param name="Logprobs">Tokens produced since the choice's previous event, when asked for.</param>
internal sealed record TextGenerated(string Text, int Choice = 0, IReadOnlyList<CobraTokenLogprob>? Logprobs = null) : GenerationEvent;

/// <summary>One choice finished.</summary>
/// <param name="Choice">0-based choice index.</param>
/// <param name="Reason">Why.</param>
/// <param name="OutputIds">The generated ids (including the end-of-text token when produced).</param>
/// <param name="Logits">Row k: the float32 logits that chose output token k, when captured.</param>
internal sealed record ChoiceCompleted(int Choice, FinishReason Reason, IReadOnlyList<int> OutputIds, IReadOnlyList<float[]>? Logits) : GenerationEvent;

/// <summary>The request finished: every choice is done.</summary>
/// <param name="InputTokens">LLM input positions: image tokens plus prompt tokens.</param>
/// <param name="CachedInputTokens">Input positions taken from a cached state snapshot.</param>
/// <param name="OutputTokens">Generated tokens over all choices.</param>
/// <param name="PrefillTime">From admission to the first token (towers and prefill, interleaved with other work).</param>
/// <param name="DecodeTime">From the first token to the last.</param>
/// <param name="Admission">The request's 1-based place in the engine's admission order.</param>
internal sealed record GenerationCompleted(int InputTokens, int CachedInputTokens, int OutputTokens, TimeSpan PrefillTime, TimeSpan DecodeTime, long Admission = 0) : GenerationEvent;
