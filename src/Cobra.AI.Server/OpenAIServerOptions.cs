namespace Cobra.AI.Server;

/// <summary>Settings of the OpenAI-compatible endpoints. Read, never modified, by the server.</summary>
public sealed class OpenAIServerOptions
{
    /// <summary>Kestrel's default request-body limit, which this server keeps as its own default.</summary>
    public const long KestrelDefaultMaxRequestBytes = 30_000_000;

    /// <summary>When set, requests must send <c>Authorization: Bearer &lt;key&gt;</c> (else 401). Must not be empty.</summary>
    public string? ApiKey { get; set; }

    /// <summary>The model id reported by <c>/v1/models</c> and accepted in requests (others get 404).</summary>
    public string ModelId { get; set; } = "cobra+3b";

    /// <summary>Largest request body in bytes (else 413); the Kestrel limit of <see cref="OpenAIServerHost"/> is set to it too.</summary>
    public long MaxRequestBytes { get; set; } = KestrelDefaultMaxRequestBytes;

    /// <summary>Time allowed to receive a whole request body (else 408), so slow uploads cannot hold connections.</summary>
    public TimeSpan BodyReadTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Admitted requests (body read and validated, then queued or generating) beyond which new ones get 429 with
    /// <c>Retry-After</c>. Requests still uploading do not count.
    /// </summary>
    public int MaxPendingRequests { get; set; } = 128;

    /// <summary>
    /// Longest a request may run once admitted (queue and generation). Past it a stream ends with an error event and
    /// <c>data: [DONE]</c>, and a non-streaming request gets 504; either way the generation is cancelled.
    /// </summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Largest <c>max_tokens</c> / <c>max_completion_tokens</c> accepted (else 400).</summary>
    public int MaxOutputTokens { get; set; } = 4096;

    /// <summary>Most stop strings per request (else 400).</summary>
    public int MaxStopSequences { get; set; } = 16;

    /// <summary>Longest stop string, in UTF-16 characters (else 400).</summary>
    public int MaxStopSequenceLength { get; set; } = 256;

    /// <summary>Most entries in <c>messages</c> (else 400; counted while parsing, so a huge array is not materialized).</summary>
    public int MaxMessages { get; set; } = 1024;

    /// <summary>Largest <c>n</c> (choices per request) accepted (else 400).</summary>
    public int MaxChoices { get; set; } = 8;

    /// <summary>
    /// On host shutdown (SIGTERM), how long running requests may go on; new ones get 503 at once. After it, streams
    /// end with an error event and <c>data: [DONE]</c>, and non-streaming requests get 503.
    /// </summary>
    public TimeSpan ShutdownGracePeriod { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Accept <c>http(s)</c> image URLs (the chat client must allow remote images too).</summary>
    public bool AllowRemoteImages { get; set; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option.</summary>
    internal void Validate()
    {
        static void Require(bool ok, string name, string problem)
        {
            if (!ok)
            {
                throw new ArgumentException($"OpenAIServerOptions.{name} {problem}", name);
            }
        }

        Require(ApiKey is null || !string.IsNullOrWhiteSpace(ApiKey), nameof(ApiKey), "must be null (no authentication) or a non-empty key; an empty key would disable authentication.");
        Require(!string.IsNullOrWhiteSpace(ModelId), nameof(ModelId), "must not be empty.");
        Require(MaxRequestBytes > 0, nameof(MaxRequestBytes), $"must be positive, not {MaxRequestBytes}.");
        Require(BodyReadTimeout > TimeSpan.Zero, nameof(BodyReadTimeout), "must be positive.");
        Require(RequestTimeout > TimeSpan.Zero, nameof(RequestTimeout), "must be positive.");
        Require(MaxPendingRequests >= 1, nameof(MaxPendingRequests), $"must be at least 1, not {MaxPendingRequests}.");
        Require(MaxOutputTokens >= 1, nameof(MaxOutputTokens), $"must be at least 1, not {MaxOutputTokens}.");
        Require(MaxStopSequences >= 0, nameof(MaxStopSequences), $"must not be negative, not {MaxStopSequences}.");
        Require(MaxStopSequenceLength >= 1, nameof(MaxStopSequenceLength), $"must be at least 1, not {MaxStopSequenceLength}.");
        Require(MaxMessages >= 1, nameof(MaxMessages), $"must be at least 1, not {MaxMessages}.");
        Require(MaxChoices >= 1, nameof(MaxChoices), $"must be at least 1, not {MaxChoices}.");
        Require(ShutdownGracePeriod >= TimeSpan.Zero, nameof(ShutdownGracePeriod), "must not be negative.");
    }

    /// <summary>A copy, so later changes by the caller do not reach a running server.</summary>
    internal OpenAIServerOptions Snapshot() => (OpenAIServerOptions)MemberwiseClone();
}
