namespace Cobra.AI.Imaging;

/// <summary>
/// Bounds image decoding per client: at most <c>maxConcurrent</c> decodes at once and at most
/// <c>maxBytes</c> of estimated decode memory across them. Callers wait in arrival order (cancellably); an
/// image that alone needs more than the byte budget is refused at once, since no amount of waiting admits it.
/// </summary>
internal sealed class ImageDecodeLimiter
{
    private readonly int maxConcurrent;
    private readonly long maxBytes;
    private readonly Lock gate = new();
    private readonly LinkedList<Waiter> waiters = new();
    private int active;
    private long bytesInFlight;

    /// <summary>Creates the limiter.</summary>
    public ImageDecodeLimiter(int maxConcurrent, long maxBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxConcurrent);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBytes);
        this.maxConcurrent = maxConcurrent;
        this.maxBytes = maxBytes;
    }

    /// <summary>Decodes running now (diagnostics and tests).</summary>
    public int Active
    {
        get
        {
            lock (gate)
            {
                return active;
            }
        }
    }

    /// <summary>Waits for a decode slot and <paramref name="bytes"/> of budget; dispose the lease when the decode is done.</summary>
    /// <exception cref="CobraImageLimitException"><paramref name="bytes"/> alone exceeds the budget.</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    public async ValueTask<IDisposable> AcquireAsync(long bytes, string source, CancellationToken cancellationToken)
    {
        if (bytes > maxBytes)
        {
            throw new CobraImageLimitException(
                $"Cannot load {source}: decoding it needs about {bytes} bytes, more than the {maxBytes} allowed for images being decoded at once (MaxImageBytesInFlight).",
                "MaxImageBytesInFlight");
        }

        cancellationToken.ThrowIfCancellationRequested();
        LinkedListNode<Waiter> node;
        lock (gate)
        {
            if (waiters.Count == 0 && Fits(bytes))
            {
                Take(bytes);
                return new Lease(this, bytes);
            }

            node = waiters.AddLast(new Waiter(bytes));
        }

        await using (cancellationToken.Register(() => Abandon(node, cancellationToken)).ConfigureAwait(false))
        {
            await node.Value.Ready.Task.ConfigureAwait(false);
        }

        return new Lease(this, bytes);
    }

    private bool Fits(long bytes) => active < maxConcurrent && bytesInFlight + bytes <= maxBytes;

    private void Take(long bytes)
    {
        active++;
        bytesInFlight += bytes;
    }

    private void Abandon(LinkedListNode<Waiter> node, CancellationToken cancellationToken)
    {
        lock (gate)
        {
            // Granted already: the caller owns a lease and will release it.
            if (node.List is null)
            {
                return;
            }

            waiters.Remove(node);
            GrantWaiting();
        }

        node.Value.Ready.TrySetCanceled(cancellationToken);
    }

    private void Release(long bytes)
    {
        lock (gate)
        {
            active--;
            bytesInFlight -= bytes;
            GrantWaiting();
        }
    }

    /// <summary>Admits waiters from the front while they fit (in order, so a large image is not starved by small ones).</summary>
    private void GrantWaiting()
    {
        while (waiters.First is { } first && Fits(first.Value.Bytes))
        {
            waiters.RemoveFirst();
            Take(first.Value.Bytes);
            first.Value.Ready.TrySetResult();
        }
    }

    private sealed record Waiter(long Bytes)
    {
        public TaskCompletionSource Ready { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class Lease(ImageDecodeLimiter owner, long bytes) : IDisposable
    {
        private int disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 0)
            {
                owner.Release(bytes);
            }
        }
    }
}
