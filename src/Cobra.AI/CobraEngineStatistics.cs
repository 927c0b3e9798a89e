namespace Cobra.AI;

/// <summary>A snapshot of a Cobra model's engine counters (<see cref="CobraChatClient.GetStatistics"/>).</summary>
public sealed record CobraEngineStatistics
{
    /// <summary>Requests waiting for admission.</summary>
    public int QueuedRequests { get; init; }

    /// <summary>Requests admitted (prefilling or decoding).</summary>
    public int ActiveRequests { get; init; }

    /// <summary>Rows in the decode batch (a request with n choices has n rows).</summary>
    public int DecodingRows { get; init; }

    /// <summary>Requests admitted since the model loaded.</summary>
    public long Requests { get; init; }

    /// <summary>Input positions (image and prompt tokens) of those requests.</summary>
    public long PromptTokens { get; init; }

    /// <summary>Input positions taken from state snapshots instead of being computed.</summary>
    public long CachedPromptTokens { get; init; }

    /// <summary>Tokens generated.</summary>
    public long GeneratedTokens { get; init; }

    /// <summary>State snapshots held.</summary>
    public int StateCacheEntries { get; init; }

    /// <summary>Bytes of state snapshots held.</summary>
    public long StateCacheBytes { get; init; }

    /// <summary>Admissions that found a cached prefix.</summary>
    public long StateCacheHits { get; init; }

    /// <summary>Admissions that found none.</summary>
    public long StateCacheMisses { get; init; }

    /// <summary>Batched decode steps run (each feeds every decoding row one token, a prefill chunk riding along or not).</summary>
    public long DecodeSteps { get; init; }

    /// <summary>Rows summed over those steps: over <see cref="DecodeSteps"/>, the mean decode batch.</summary>
    public long DecodeStepRows { get; init; }

    /// <summary>
    /// Time the engine's thread spent on work (admission, decode steps, prefill chunks, vision towers) rather than
    /// waiting for requests: its change over a span of wall time is the engine's utilisation.
    /// </summary>
    public TimeSpan BusyTime { get; init; }
}
