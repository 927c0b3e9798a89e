using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Logging;

namespace Cobra.AI;

/// <summary>
/// Loads one registered Cobra model once, off the caller's thread: started by <see cref="CobraModelLoadService"/>
/// at host start or by the first call, whichever comes first. Callers await the load with their own cancellation;
/// a failed load is rethrown (wrapped, naming the model) on every call. Disposing cancels a running load and frees
/// the model.
/// </summary>
internal sealed class CobraChatClientLoader : IDisposable
{
    private readonly CobraModelOptions options;
    private readonly ILoggerFactory? loggerFactory;
    private readonly IDistributedCache? stateStore;
    private readonly CancellationTokenSource stopping = new();
    private readonly Lock gate = new();
    private Task<CobraChatClient>? load;
    private volatile string? stage;
    private int disposed;

    public CobraChatClientLoader(CobraModelOptions options, ILoggerFactory? loggerFactory, IDistributedCache? stateStore = null)
    {
        this.options = options;
        this.loggerFactory = loggerFactory;
        this.stateStore = stateStore;                                            // [state-store] AddCobraDistributedStateStore
    }

    public CobraModelState State => load switch
    {
        null => CobraModelState.NotStarted,
        { IsCompletedSuccessfully: true } => CobraModelState.Ready,
        { IsCompleted: true } => CobraModelState.Failed,
        _ => CobraModelState.Loading,
    };

    public string? Stage => stage;

    public Exception? Failure => load is { IsCompleted: true, IsCompletedSuccessfully: false } failed ? Wrap(failed) : null;

    /// <summary>The options the model is loaded with (a validated snapshot).</summary>
    public CobraModelOptions Options => options;

    /// <summary>Starts the load if it has not started; never blocks.</summary>
    public Task<CobraChatClient> Start()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        lock (gate)
        {
            // Task.Run: the caller (a host starting, a request thread) never runs the synchronous parts of loading.
            return load ??= Task.Run(() => CobraChatClient.LoadAsync(options, loggerFactory, stateStore, new Progress(this), stopping.Token), stopping.Token);
        }
    }

    /// <summary>The loaded client, waiting for the load (started now if needed) until <paramref name="cancellationToken"/> fires.</summary>
    public async Task<CobraChatClient> GetClientAsync(CancellationToken cancellationToken)
    {
        var task = Start();
        if (!task.IsCompleted)
        {
            await ((Task)task).WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            cancellationToken.ThrowIfCancellationRequested();
        }

        return task.IsCompletedSuccessfully ? task.Result : throw Wrap(task);
    }

    /// <summary>The client when it is loaded, else null.</summary>
    public CobraChatClient? Loaded => load is { IsCompletedSuccessfully: true } done ? done.Result : null;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        stopping.Cancel();
        Task<CobraChatClient>? running;
        lock (gate)
        {
            running = load;
        }

        if (running is { IsCompletedSuccessfully: true })
        {
            running.Result.Dispose();
        }
        else
        {
            // A load still running frees its model when it finishes.
            running?.ContinueWith(t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }

        stopping.Dispose();
    }

    private Exception Wrap(Task failed)
    {
        var cause = failed.Exception?.InnerException ?? failed.Exception as Exception ?? new OperationCanceledException("The Cobra model load was cancelled.");
        return cause is ObjectDisposedException or OperationCanceledException && Volatile.Read(ref disposed) != 0
            ? new ObjectDisposedException(nameof(CobraChatClient), "The Cobra model's container was disposed.")
            : new InvalidOperationException($"The Cobra model '{options.ModelId}' failed to load: {cause.Message}", cause);
    }

    private sealed class Progress(CobraChatClientLoader owner) : IProgress<CobraLoadProgress>
    {
        public void Report(CobraLoadProgress value) => owner.stage = value.Stage;
    }
}

/// <summary>Starts the model load when the host starts, without waiting for it: the host's start is not delayed.</summary>
internal sealed class CobraModelLoadService(CobraChatClientLoader loader) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        _ = loader.Start();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>
/// The <see cref="IChatClient"/> a registration hands out before the model is loaded: each call awaits the load
/// (with the call's cancellation), then delegates to the <see cref="CobraChatClient"/>.
/// </summary>
internal sealed class DeferredCobraChatClient(CobraChatClientLoader loader) : IChatClient
{
    private readonly ChatClientMetadata metadata = new("cobra", null, loader.Options.ModelId);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var client = await loader.GetClientAsync(cancellationToken).ConfigureAwait(false);
        return await client.GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var client = await loader.GetClientAsync(cancellationToken).ConfigureAwait(false);
        await foreach (var update in client.GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            yield return update;
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is null && serviceType == typeof(CobraModelReadiness))
        {
            return new CobraModelReadiness(loader);
        }

        if (loader.Loaded is { } client)
        {
            return client.GetService(serviceType, serviceKey);
        }

        return serviceKey is not null ? null
            : serviceType == typeof(ChatClientMetadata) ? metadata
            : serviceType.IsInstanceOfType(this) ? this
            : null;
    }

    public void Dispose() => loader.Dispose();
}
