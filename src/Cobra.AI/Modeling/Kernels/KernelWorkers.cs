using System.Diagnostics;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// Dedicated threads for the managed CPU kernels. A decode step runs a few hundred short kernels between torch
/// ops; waking pool threads for each costs more than the work it splits (the thread pool and libgomp each sleep
/// between calls). These workers spin briefly after each job, so back-to-back kernels start at once, then
/// block, so they do not steal the cores from torch for long. One job at a time (callers are the inference
/// thread).
/// </summary>
internal static class KernelWorkers
{
    /// <summary>How long an idle worker keeps spinning before it blocks.</summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 5000;         // 200 µs

    private static readonly Lock Gate = new();
    private static readonly Worker[] Workers = Enumerable.Range(1, Math.Max(0, Environment.ProcessorCount - 1)).Select(i => new Worker(i)).ToArray();
    private static Action<int>? job;
    private static int version;
    private static int remaining;

    /// <summary>Parts a job is split into: one per core.</summary>
    public static int Parallelism => Workers.Length + 1;

    /// <summary>Runs <paramref name="body"/>(0) on the caller and <paramref name="body"/>(1..Parallelism-1) on the workers; returns when all are done.</summary>
    public static void Run(Action<int> body)
    {
        if (Workers.Length == 0)
        {
            body(0);
            return;
        }

        lock (Gate)
        {
            job = body;
            Volatile.Write(ref remaining, Workers.Length);
            Interlocked.Increment(ref version);
            foreach (var worker in Workers)
            {
                worker.Wake();
            }

            Exception? failure = null;
            try
            {
                body(0);
            }
            catch (Exception e)
            {
                failure = e;
            }

            var spin = new SpinWait();
            while (Volatile.Read(ref remaining) > 0)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            job = null;
            var errors = Workers.Select(w => w.TakeError()).OfType<Exception>().Prepend(failure).OfType<Exception>().ToArray();
            if (errors.Length > 0)
            {
                throw new AggregateException(errors);
            }
        }
    }

    private sealed class Worker
    {
        private readonly int part;
        private readonly SemaphoreSlim signal = new(0);
        private int sleeping;
        private Exception? error;

        public Worker(int part)
        {
            this.part = part;
            new Thread(Loop) { IsBackground = true, Name = $"cobra-kernel-{part}" }.Start();
        }

        public void Wake()
        {
            if (Volatile.Read(ref sleeping) == 1)
            {
                signal.Release();
            }
        }

        public Exception? TakeError() => Interlocked.Exchange(ref error, null);

        private void Loop()
        {
            int seen = 0;
            while (true)
            {
                long until = Stopwatch.GetTimestamp() + SpinTicks;
                while (Volatile.Read(ref version) == seen)
                {
                    if (Stopwatch.GetTimestamp() < until)
                    {
                        Thread.SpinWait(20);
                        continue;
                    }

                    // A full fence between announcing sleep and re-checking for work (x86 may reorder a
                    // store before a later load; the caller's Interlocked.Increment fences its side).
                    Interlocked.Exchange(ref sleeping, 1);
                    if (Volatile.Read(ref version) == seen)
                    {
                        signal.Wait();
                    }

                    Volatile.Write(ref sleeping, 0);
                    until = Stopwatch.GetTimestamp() + SpinTicks;
                }

                seen = Volatile.Read(ref version);
                try
                {
                    job?.Invoke(part);
                }
                catch (Exception e)
                {
                    error = e;
                }
                finally
                {
                    Interlocked.Decrement(ref remaining);
                }
            }
        }
    }
}
