namespace Cobra.AI.Server;

/// <summary>Settings of the OpenAI-compatible endpoints.</summary>
public sealed class OpenAIServerOptions
{
    /// <summary>When set, requests must send <c>Authorization: Bearer &lt;key&gt;</c> (else 401).</summary>
    public string? ApiKey { get; set; }

    /// <summary>The model id reported by <c>/v1/models</c> and accepted in requests (others get 404).</summary>
    public string ModelId { get; set; } = "cobra+3b";

    /// <summary>Largest request body in bytes (else 413).</summary>
    public long MaxRequestBytes { get; set; } = 32L * 1024 * 1024;

    /// <summary>Requests in flight (queued or generating) beyond which new ones get 429.</summary>
    public int MaxPendingRequests { get; set; } = 128;

    /// <summary>Accept <c>http(s)</c> image URLs (the chat client must allow remote images too).</summary>
    public bool AllowRemoteImages { get; set; }
}
