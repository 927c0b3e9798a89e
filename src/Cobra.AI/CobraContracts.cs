namespace Cobra.AI;

/// <summary>
/// Keys Cobra reads from <see cref="Microsoft.Extensions.AI.ChatOptions.AdditionalProperties"/> and writes to
/// <see cref="Microsoft.Extensions.AI.ChatResponseUpdate.AdditionalProperties"/>, for what the abstractions have
/// no property for. The OpenAI-compatible server maps its request fields onto them.
/// </summary>
public static class CobraAdditionalProperties
{
    /// <summary>Request: CTRL repetition penalty (a number &gt; 0; 1 = off).</summary>
    public const string RepetitionPenalty = "repetition_penalty";

    /// <summary>
    /// Request: number of completions (an integer in [1, <c>CobraModelOptions.MaxChoices</c>]). They share one
    /// prefill: the state is forked into that many batch rows. Choice <c>i</c> samples with seed <c>Seed + i</c>.
    /// </summary>
    public const string ChoiceCount = "n";

    /// <summary>
    /// Response update: the 0-based index (an <see cref="int"/>) of the choice the update belongs to, present
    /// when <see cref="ChoiceCount"/> &gt; 1. Each choice also has its own <c>MessageId</c>.
    /// </summary>
    public const string ChoiceIndex = "choice_index";

    /// <summary>Request: <c>true</c> to return the log-probability of each generated token.</summary>
    public const string Logprobs = "logprobs";

    /// <summary>Request: how many of the most likely alternatives to return per token (an integer in [0, 20]).</summary>
    public const string TopLogprobs = "top_logprobs";

    /// <summary>
    /// Response update: an <see cref="IReadOnlyList{T}"/> of <see cref="CobraTokenLogprob"/> for the tokens
    /// generated since the previous update of the same choice (present when <see cref="Logprobs"/> was asked for).
    /// </summary>
    public const string TokenLogprobs = "token_logprobs";
}

/// <summary>The log-probability of one generated token, with the most likely alternatives at that step.</summary>
/// <param name="Token">The token's text (invalid UTF-8 fragments as U+FFFD).</param>
/// <param name="Logprob">Natural log of its probability under the model's distribution at that step (after penalties and constraints, before temperature).</param>
/// <param name="Bytes">The token's UTF-8 bytes.</param>
/// <param name="TopLogprobs">The most likely tokens at that step, most likely first.</param>
public sealed record CobraTokenLogprob(string Token, double Logprob, byte[] Bytes, IReadOnlyList<CobraTopLogprob> TopLogprobs);

/// <summary>One alternative token at a step.</summary>
/// <param name="Token">The token's text.</param>
/// <param name="Logprob">Natural log of its probability.</param>
/// <param name="Bytes">The token's UTF-8 bytes.</param>
public sealed record CobraTopLogprob(string Token, double Logprob, byte[] Bytes);

/// <summary>
/// The engine's queue is full: more than <c>CobraModelOptions.MaxQueuedRequests</c> requests wait for a slot.
/// Nothing was started; retry later (the server answers 429 with <c>Retry-After</c>).
/// </summary>
public sealed class CobraQueueFullException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="queued">Requests waiting when this one was refused.</param>
    /// <param name="limit">The queue limit.</param>
    public CobraQueueFullException(int queued, int limit)
        : base($"The Cobra engine's queue is full: {queued} requests are waiting (CobraModelOptions.MaxQueuedRequests = {limit}); retry later.")
    {
        Queued = queued;
        Limit = limit;
    }

    /// <summary>Requests waiting when this one was refused.</summary>
    public int Queued { get; }

    /// <summary>The queue limit.</summary>
    public int Limit { get; }
}

/// <summary>
/// <c>ChatOptions.ConversationId</c> names no conversation this client holds (never created, or past its
/// retention). The caller must re-send the whole history without the id.
/// </summary>
public sealed class CobraConversationNotFoundException : KeyNotFoundException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="conversationId">The unknown id.</param>
    public CobraConversationNotFoundException(string conversationId)
        : base($"Conversation '{conversationId}' is unknown to this Cobra client (never created here, or evicted after its retention); send the whole history without ChatOptions.ConversationId.")
    {
        ConversationId = conversationId;
    }

    /// <summary>The unknown id.</summary>
    public string ConversationId { get; }
}

/// <summary>
/// An image is over a configured limit (encoded bytes, pixels, or images in flight). The server maps it to 413.
/// </summary>
public sealed class CobraImageLimitException : ArgumentException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What was over which limit, naming the option.</param>
    /// <param name="limitName">The option that sets the limit (e.g. <c>MaxImagePixels</c>).</param>
    public CobraImageLimitException(string message, string limitName)
        : base(message)
    {
        LimitName = limitName;
    }

    /// <summary>The option that sets the limit.</summary>
    public string LimitName { get; }
}
