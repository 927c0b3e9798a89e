using System.Threading.Channels;
using Cobra.AI.Modeling.Mamba;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Logging;

namespace Cobra.AI.Generation.StateStore;

/// <summary>A snapshot fetched from the store and checked byte for byte; the engine decodes it on its thread.</summary>
/// <param name="PrefixLength">Prompt tokens (after the image) the state has consumed.</param>
/// <param name="Value">The encoded snapshot.</param>
internal sealed record RemoteSnapshot(int PrefixLength, byte[] Value);

/// <summary>Limits of the distributed state store.</summary>
/// <param name="TimeToLive">How long a snapshot lives in the store.</param>
/// <param name="MaxSnapshotBytes">Larger snapshots are neither written nor read.</param>
/// <param name="Timeout">Bound of every store operation (a whole lookup, one write).</param>
/// <param name="MaxProbes">Candidate prefixes tried per lookup, longest first.</param>
/// <param name="WriteQueue">Snapshots waiting to be written; more are dropped.</param>
/// <param name="RetryInterval">After a failure the store is skipped for this long, then tried again.</param>
/// <param name="RememberedKeys">Keys this process wrote, remembered so a lookup does not fetch what its own cache holds.</param>
internal sealed record StateStoreSettings(
    TimeSpan TimeToLive, long MaxSnapshotBytes, TimeSpan Timeout, int MaxProbes = 4, int WriteQueue = 4, TimeSpan? RetryInterval = null, int RememberedKeys = 64)
{
    /// <summary>The retry interval in force.</summary>
    public TimeSpan Retry => RetryInterval ?? TimeSpan.FromSeconds(2);
}

/// <summary>
/// The second level of the conversation state cache: snapshots shared by replicas through an
/// <see cref="IDistributedCache"/> (Redis). Lookups run on the request's thread before the engine sees it; writes
/// are encoded on the inference thread (that reads tensors) and sent by one background writer through a bounded
/// queue (dropped when full). Every operation is bounded by <see cref="StateStoreSettings.Timeout"/>; a failure
/// logs one warning per outage, skips the store for <see cref="StateStoreSettings.Retry"/>, then tries again.
/// Nothing here throws into the engine: a missing, slow, foreign or corrupt snapshot means recomputing.
/// </summary>
internal sealed partial class DistributedStateStore : IDisposable
{
    private readonly IDistributedCache cache;
    private readonly StateSnapshotCodec codec;
    private readonly PromptBoundaries boundaries;
    private readonly StateStoreSettings settings;
    private readonly ILogger logger;
    private readonly IDisposable? ownedCache;
    private readonly string description;
    private readonly TimeProvider time;
    private readonly Channel<(string Key, byte[] Value)> writes;
    private readonly Task writer;
    private readonly CancellationTokenSource stopping = new();
    private readonly LinkedList<string> remembered = new();
    private readonly HashSet<string> rememberedSet = new(StringComparer.Ordinal);
    private int unavailable;
    private int pending;                                                        // queued or being written
    private long retryAt;
    private long hits, misses, rejected, dropped, written, failures, bytesRead, bytesWritten;

    /// <summary>A store over <paramref name="cache"/> (disposed with this store when <paramref name="ownedCache"/> is it).</summary>
    public DistributedStateStore(IDistributedCache cache, StateSnapshotCodec codec, PromptBoundaries boundaries, StateStoreSettings settings, ILogger logger, string description, IDisposable? ownedCache = null, TimeProvider? time = null)
    {
        this.cache = cache;
        this.codec = codec;
        this.boundaries = boundaries;
        this.settings = settings;
        this.logger = logger;
        this.description = description;
        this.ownedCache = ownedCache;
        this.time = time ?? TimeProvider.System;
        writes = Channel.CreateBounded<(string, byte[])>(new BoundedChannelOptions(Math.Max(1, settings.WriteQueue)) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        writer = Task.Run(WriteLoopAsync);
    }

    /// <summary>Counters for tests and the bench.</summary>
    public StateStoreCounters Counters => new(
        Interlocked.Read(ref hits), Interlocked.Read(ref misses), Interlocked.Read(ref rejected), Interlocked.Read(ref dropped),
        Interlocked.Read(ref written), Interlocked.Read(ref failures), Interlocked.Read(ref bytesRead), Interlocked.Read(ref bytesWritten));

    /// <summary>Whether the last store operation failed (an outage is in progress).</summary>
    public bool Unavailable => Volatile.Read(ref unavailable) != 0;

    /// <summary>
    /// The longest snapshot in the store for a prefix of <paramref name="promptIds"/> after
    /// <paramref name="imageKey"/>'s image, checked (model, version, integrity, image, tokens) but not decoded;
    /// null when there is none, when this process wrote the longest candidate itself (its own cache holds it), or
    /// when the store fails or exceeds its timeout. Never throws except for <paramref name="cancellationToken"/>.
    /// </summary>
    public async Task<RemoteSnapshot?> FindLongestAsync(string? imageKey, IReadOnlyList<int> promptIds, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(promptIds);
        if (!ShouldTry())
        {
            return null;
        }

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, stopping.Token);
        deadline.CancelAfter(settings.Timeout);
        try
        {
            foreach (int length in boundaries.Candidates(promptIds, imageKey is not null).Take(settings.MaxProbes))
            {
                string key = StateStoreKeys.For(codec.ModelHash, imageKey, promptIds, length);
                if (IsRemembered(key))
                {
                    return null;                                                 // shorter candidates lose to the local cache
                }

                var value = await Bounded(cache.GetAsync(key, deadline.Token), deadline.Token).ConfigureAwait(false);
                Succeeded();
                if (value is null)
                {
                    Interlocked.Increment(ref misses);
                    continue;
                }

                Interlocked.Add(ref bytesRead, value.Length);
                string? rejection = value.Length > settings.MaxSnapshotBytes
                    ? $"{value.Length} bytes, over the {settings.MaxSnapshotBytes}-byte cap"
                    : codec.Validate(value, imageKey, promptIds, length);
                if (rejection is not null)
                {
                    Interlocked.Increment(ref rejected);
                    LogRejected(logger, key, rejection);
                    continue;
                }

                Interlocked.Increment(ref hits);
                return new RemoteSnapshot(length, value);
            }

            return null;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e)
        {
            Failed(e is OperationCanceledException ? new TimeoutException($"lookup exceeded {settings.Timeout.TotalMilliseconds:F0} ms") : e);
            return null;
        }
    }

    /// <summary>
    /// Decodes a snapshot from <see cref="FindLongestAsync"/> for this request (checked again); null when it does
    /// not belong here. Call on the inference thread. Never throws.
    /// </summary>
    public MambaState? Decode(RemoteSnapshot snapshot, string? imageKey, IReadOnlyList<int> promptIds)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        try
        {
            var state = codec.Decode(snapshot.Value, imageKey, promptIds, snapshot.PrefixLength, out var rejection);
            if (state is null)
            {
                Interlocked.Increment(ref rejected);
                LogRejected(logger, "(decode)", rejection!);
            }

            return state;
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref rejected);
            LogRejected(logger, "(decode)", e.Message);
            return null;
        }
    }

    /// <summary>
    /// Queues the state after <paramref name="tokens"/> for the store: encodes it here (call on the inference thread,
    /// it reads tensors), sends it from the background writer. Skipped while the store is down, when the queue is
    /// full, or when the snapshot is over the size cap. Never throws.
    /// </summary>
    public void Publish(string? imageKey, IReadOnlyList<int> tokens, MambaState state)
    {
        try
        {
            if (tokens.Count == 0 || state.BatchSize != 1 || stopping.IsCancellationRequested)
            {
                return;
            }

            if (!ShouldTry() || writes.Reader.Count >= settings.WriteQueue)
            {
                Interlocked.Increment(ref dropped);
                return;
            }

            // Written again even when this process wrote it before: the store may have lost it (restart, eviction,
            // TTL), and the rewrite refreshes its TTL. Repeats are rare: the engine stores a prefix once per prefill.
            string key = StateStoreKeys.For(codec.ModelHash, imageKey, tokens, tokens.Count);
            long size = codec.ValueBytes(imageKey, tokens.Count);
            if (size > settings.MaxSnapshotBytes)
            {
                Interlocked.Increment(ref dropped);
                LogTooLarge(logger, size, settings.MaxSnapshotBytes);
                return;
            }

            var value = codec.Encode(imageKey, tokens, state);
            Interlocked.Increment(ref pending);
            if (writes.Writer.TryWrite((key, value)))
            {
                Remember(key);                                                  // lookups leave this prefix to the local cache
            }
            else
            {
                Interlocked.Decrement(ref pending);
                Interlocked.Increment(ref dropped);
            }
        }
        catch (Exception e)
        {
            LogEncodeFailed(logger, e);
        }
    }

    /// <summary>Waits until every queued write has been attempted (tests, the bench).</summary>
    public async Task FlushAsync(CancellationToken cancellationToken)
    {
        while (Volatile.Read(ref pending) != 0)
        {
            await Task.Delay(10, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Stops the writer (queued writes get one timeout to finish) and frees an owned cache.</summary>
    public void Dispose()
    {
        if (!writes.Writer.TryComplete())
        {
            return;
        }

        writer.Wait(settings.Timeout);                                          // the loop catches everything
        stopping.Cancel();
        ownedCache?.Dispose();
    }

    private async Task WriteLoopAsync()
    {
        var entry = new DistributedCacheEntryOptions { AbsoluteExpirationRelativeToNow = settings.TimeToLive };
        await foreach (var (key, value) in writes.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            try
            {
                if (!ShouldTry() || stopping.IsCancellationRequested)
                {
                    Interlocked.Increment(ref dropped);
                    continue;
                }

                using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token);
                deadline.CancelAfter(settings.Timeout);
                await Bounded(cache.SetAsync(key, value, entry, deadline.Token), deadline.Token).ConfigureAwait(false);
                Succeeded();
                Interlocked.Increment(ref written);
                Interlocked.Add(ref bytesWritten, value.Length);
            }
            catch (Exception e)
            {
                Failed(e is OperationCanceledException ? new TimeoutException($"write exceeded {settings.Timeout.TotalMilliseconds:F0} ms") : e);
            }
            finally
            {
                Interlocked.Decrement(ref pending);
            }
        }
    }

    /// <summary>
    /// Stops waiting for <paramref name="operation"/> when <paramref name="token"/> fires: a cache need not honour its
    /// token (RedisCache checks it only before sending). An abandoned operation's fault is observed, not leaked.
    /// </summary>
    private static Task<T> Bounded<T>(Task<T> operation, CancellationToken token)
    {
        _ = operation.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return operation.WaitAsync(token);
    }

    private static Task Bounded(Task operation, CancellationToken token)
    {
        _ = operation.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return operation.WaitAsync(token);
    }

    private bool ShouldTry() => Volatile.Read(ref unavailable) == 0 || time.GetTimestamp() >= Interlocked.Read(ref retryAt);

    private void Failed(Exception error)
    {
        Interlocked.Increment(ref failures);
        Interlocked.Exchange(ref retryAt, time.GetTimestamp() + (long)(settings.Retry.TotalSeconds * time.TimestampFrequency));
        if (Interlocked.Exchange(ref unavailable, 1) == 0)
        {
            LogUnavailable(logger, description, error.GetType().Name, error.Message);
        }
    }

    private void Succeeded()
    {
        if (Interlocked.Exchange(ref unavailable, 0) != 0)
        {
            LogAvailable(logger, description);
        }
    }

    private bool IsRemembered(string key)
    {
        lock (remembered)
        {
            return rememberedSet.Contains(key);
        }
    }

    private void Remember(string key)
    {
        lock (remembered)
        {
            if (rememberedSet.Add(key))
            {
                remembered.AddFirst(key);
                while (remembered.Count > settings.RememberedKeys)
                {
                    rememberedSet.Remove(remembered.Last!.Value);
                    remembered.RemoveLast();
                }
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Conversation state store {Store} is unavailable ({ErrorType}: {Error}); conversations are recomputed until it is back")]
    private static partial void LogUnavailable(ILogger logger, string store, string errorType, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "Conversation state store {Store} is available again")]
    private static partial void LogAvailable(ILogger logger, string store);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Ignored conversation state snapshot {Key}: {Reason}; recomputing")]
    private static partial void LogRejected(ILogger logger, string key, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Conversation state snapshot of {Bytes} bytes not stored: over the {Cap}-byte cap")]
    private static partial void LogTooLarge(ILogger logger, long bytes, long cap);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not encode a conversation state snapshot; not stored")]
    private static partial void LogEncodeFailed(ILogger logger, Exception exception);
}

/// <summary>What a <see cref="DistributedStateStore"/> has done so far.</summary>
/// <param name="Hits">Lookups that found a valid snapshot.</param>
/// <param name="Misses">Probes that found no value.</param>
/// <param name="Rejected">Values ignored (foreign, corrupt, too large).</param>
/// <param name="Dropped">Writes dropped (queue full, store down, over the cap).</param>
/// <param name="Written">Writes completed.</param>
/// <param name="Failures">Store operations that failed or timed out.</param>
/// <param name="BytesRead">Bytes fetched.</param>
/// <param name="BytesWritten">Bytes written.</param>
internal sealed record StateStoreCounters(long Hits, long Misses, long Rejected, long Dropped, long Written, long Failures, long BytesRead, long BytesWritten);
