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
}
