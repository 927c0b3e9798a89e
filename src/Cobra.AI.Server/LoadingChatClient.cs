using Microsoft.Extensions.AI;

namespace Cobra.AI.Server;

/// <summary>
/// Stands in for a chat client that is still loading: throws <see cref="ModelNotReadyException"/> (the endpoints
/// answer 503 with <c>Retry-After</c>, and <c>/health</c> answers 503 <c>loading</c>) until <see cref="Inner"/> is
/// set, then delegates to it. Lets a server listen at once while the model loads.
/// </summary>
public sealed class LoadingChatClient : IChatClient
{
    private volatile IChatClient? inner;

    /// <summary>The loaded client (owned: disposed with this one), or null while loading.</summary>
    public IChatClient? Inner
    {
        get => inner;
        set => inner = value;
    }

    private IChatClient Ready => inner ?? throw new ModelNotReadyException();

    /// <inheritdoc />
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        Ready.GetResponseAsync(messages, options, cancellationToken);

    /// <inheritdoc />
    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        Ready.GetStreamingResponseAsync(messages, options, cancellationToken);

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        return serviceKey is null && serviceType == typeof(LoadingChatClient) ? this : inner?.GetService(serviceType, serviceKey);
    }

    /// <inheritdoc />
    public void Dispose() => inner?.Dispose();
}
