using System.Collections.Concurrent;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;

namespace Cobra.AI.Tests.Modeling;

public sealed class KernelWorkersTests
{
    public KernelWorkersTests() => TorchRuntime.EnsureInitialized();

    [Fact]
    public void The_thread_count_is_honoured_and_the_gemv_result_does_not_depend_on_it()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(1, 512);
        var w = torch.randn(4096, 512);                                          // 8 MiB: split over the workers
        var reference = CpuGemv.Linear(x, w, null);
        try
        {
            foreach (int threads in new[] { 3, 1, 2 })
            {
                KernelWorkers.SetParallelism(threads);
                var parts = new ConcurrentBag<(int Part, int Thread)>();
                KernelWorkers.Run((part, _) => parts.Add((part, Environment.CurrentManagedThreadId)));
                Assert.Equal(Enumerable.Range(0, threads), parts.Select(p => p.Part).Order());
                Assert.Equal(threads, parts.Select(p => p.Thread).Distinct().Count());
                Assert.True(CpuGemv.Linear(x, w, null).equal(reference).all().item<bool>(), $"{threads} threads");
            }
        }
        finally
        {
            KernelWorkers.SetParallelism(Environment.ProcessorCount);
        }
    }

    [Fact]
    public void A_failing_part_fails_the_job_and_the_workers_keep_serving()
    {
        var e = Assert.Throws<AggregateException>(() => KernelWorkers.Run((part, parts) =>
        {
            if (part == parts - 1)
            {
                throw new InvalidOperationException("part failed");
            }
        }));
        Assert.Contains(e.InnerExceptions, x => x.Message == "part failed");
        int ran = 0, parts = 0;
        KernelWorkers.Run((_, count) =>
        {
            Interlocked.Increment(ref ran);
            parts = count;
        });
        Assert.Equal(parts, ran);
    }
}
