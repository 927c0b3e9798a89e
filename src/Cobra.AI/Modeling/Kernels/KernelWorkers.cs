using System.Diagnostics;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// Dedicated threads for the managed CPU kernels. A decode step runs a few hundred short kernels between torch
/// ops; waking pool threads for each costs more than the work it splits (the thread pool and libgomp each sleep
/// between calls). These workers spin briefly after each job, so back-to-back kernels start at once, then
/// block, so they do not steal the cores from torch for long. One job at a time (callers are the inference
/// thread). The thread count is process-wide, like libtorch's: one per core unless
/// <see cref="SetParallelism"/> (<see cref="CobraModelOptions.CpuThreads"/>) says otherwise; the threads start
/// on the first kernel that splits its work.
/// </summary>
internal static class KernelWorkers
{
    /// <summary>How long an idle worker keeps spinning before it blocks.</summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 5000;         // 200 µs

    private static readonly Lock Gate = new();
    private static int parallelism = Environment.ProcessorCount;
    private static Pool? pool;

    /// <summary>Parts a job is split into (the caller's thread plus the workers).</summary>
    public static int Parallelism => Volatile.Read(ref parallelism);

    /// <summary>Sets the number of parts (threads, the caller's included) of every later job.</summary>
    public static void SetParallelism(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        lock (Gate)
        {
            if (threads == parallelism)
            {
                return;
            }

            pool?.Stop();
            pool = null;
            Volatile.Write(ref parallelism, threads);
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/>(part, parts) for part 0 on the caller and 1..parts-1 on the workers, where
    /// parts is <see cref="Parallelism"/> at the start of this job; returns when all are done.
    /// </summary>
    public static void Run(Action<int, int> body)
    {
        lock (Gate)
        {
            int parts = parallelism;
            if (parts == 1)
            {
                body(0, 1);
                return;
            }

            pool ??= new Pool(parts - 1);
            pool.Run(part => body(part, parts));
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/>(from, to) over [0, <paramref name="count"/>) cut into <see cref="Parallelism"/>
    /// contiguous ranges whose bounds are multiples of <paramref name="granule"/> (the last ends at count; a part
    /// left without work gets an empty range). One place for the partition every kernel splits its work by. With
    /// <paramref name="parallel"/> false (work too small to pay for waking the workers) the caller runs body(0, count).
    /// </summary>
    public static void Split(long count, long granule, Action<long, long> body, bool parallel = true)
    {
        if (!parallel)
        {
            body(0, count);
            return;
        }

        long units = (count + granule - 1) / granule;
        Run((part, parts) => body(Math.Min(count, units * part / parts * granule), Math.Min(count, units * (part + 1) / parts * granule)));
    }

    /// <summary>One set of workers; replaced, never resized, when the thread count changes.</summary>
    private sealed class Pool
    {
        private readonly Worker[] workers;
        private Action<int>? job;
        private int version;
        private int remaining;
        private volatile bool stopped;

        public Pool(int count) => workers = Enumerable.Range(1, count).Select(i => new Worker(this, i)).ToArray();

        public void Run(Action<int> body)
        {
            job = body;
            Volatile.Write(ref remaining, workers.Length);
            Interlocked.Increment(ref version);
            foreach (var worker in workers)
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
            var errors = workers.Select(w => w.TakeError()).OfType<Exception>().Prepend(failure).OfType<Exception>().ToArray();
            if (errors.Length > 0)
            {
                throw new AggregateException(errors);
            }
        }

        /// <summary>Lets the threads end (between jobs: callers hold the gate).</summary>
        public void Stop()
        {
            stopped = true;
            foreach (var worker in workers)
            {
                worker.Wake(force: true);
            }
        }

        private sealed class Worker
        {
            private readonly Pool owner;
            private readonly int part;
            private readonly SemaphoreSlim signal = new(0);
            private int sleeping;
            private Exception? error;

            public Worker(Pool owner, int part)
            {
                this.owner = owner;
                this.part = part;
                new Thread(Loop) { IsBackground = true, Name = $"cobra-kernel-{part}" }.Start();
            }

            public void Wake(bool force = false)
            {
                if (force || Volatile.Read(ref sleeping) == 1)
                {
                    signal.Release();
                }
            }

            public Exception? TakeError() => Interlocked.Exchange(ref error, null);

            private void Loop()
            {
                int seen = 0;
                while (!owner.stopped)
                {
                    long until = Stopwatch.GetTimestamp() + SpinTicks;
                    while (Volatile.Read(ref owner.version) == seen && !owner.stopped)
                    {
                        if (Stopwatch.GetTimestamp() < until)
                        {
                            Thread.SpinWait(20);
                            continue;
                        }

                        // A full fence between announcing sleep and re-checking for work (x86 may reorder a
                        // store before a later load; the caller's Interlocked.Increment fences its side).
                        Interlocked.Exchange(ref sleeping, 1);
                        if (Volatile.Read(ref owner.version) == seen && !owner.stopped)
                        {
                            signal.Wait();
                        }

                        Volatile.Write(ref sleeping, 0);
                        until = Stopwatch.GetTimestamp() + SpinTicks;
                    }

                    if (owner.stopped)
                    {
                        break;
                    }

                    seen = Volatile.Read(ref owner.version);
                    try
                    {
                        owner.job?.Invoke(part);
                    }
                    catch (Exception e)
                    {
                        error = e;
                    }
                    finally
                    {
                        Interlocked.Decrement(ref owner.remaining);
                    }
                }
            }
        }
    }
}
