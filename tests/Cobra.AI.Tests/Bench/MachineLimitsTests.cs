using Cobra.Cli;
using Xunit;
using Xunit.Abstractions;

namespace Cobra.AI.Tests.Bench;

/// <summary>The bench's limit probes produce finite positive figures at small sizes (no timing asserts).</summary>
public sealed class MachineLimitsTests(ITestOutputHelper output)
{
    [Fact]
    public void Probes_report_the_limits_the_bench_holds_figures_against()
    {
        var log = new StringWriter();
        var limits = MachineLimits.Measure(readBytes: 128L << 20, threads: 1, gemms: false, log);
        output.WriteLine(log.ToString());
        Assert.Equal(1, limits["threads"]!.GetValue<int>());
        Assert.InRange(limits["read_gb_s"]!.GetValue<double>(), 1e-3, 1e4);
        Assert.InRange(limits["fp32_peak_gflops"]!.GetValue<double>(), 1e-3, 1e5);
        Assert.Contains(limits["vector_bits"]!.GetValue<int>(), new[] { 128, 256, 512 });
        if (Cobra.AI.Modeling.Kernels.NativeBf16Kernels.IsAvailable)
        {
            // The dot-product probe is the peak; without libtorch probes (gemms: false) it is the figure itself.
            Assert.InRange(limits["bf16_dot_peak_gflops"]!.GetValue<double>(), 1e-3, 1e5);
            Assert.Equal(limits["bf16_dot_peak_gflops"]!.GetValue<double>(), limits["bf16_peak_gflops"]!.GetValue<double>());
            Assert.Contains("dot-product microkernel", limits["bf16_peak_source"]!.GetValue<string>(), StringComparison.Ordinal);
        }
        else
        {
            Assert.Contains("lower bound", limits["bf16_peak_source"]!.GetValue<string>(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public void The_best_linear_probe_names_the_kernel_it_measured()
    {
        var (gflops, kernel) = MachineLimits.BestLinearGflops(TorchSharp.torch.ScalarType.BFloat16, 8, 64, 96);
        Assert.InRange(gflops, 1e-3, 1e5);
        Assert.Contains(kernel, new[] { "libtorch", "native" });
        Assert.Equal("libtorch", MachineLimits.BestLinearGflops(TorchSharp.torch.ScalarType.Float32, 8, 64, 96).Kernel);
    }

    [Fact]
    public void A_compute_bound_run_is_held_against_the_higher_of_the_peak_probes_around_it()
    {
        // Three runs of 100 GFLOP: 1 s, 2 s, 1.5 s (100, 50, 67 GFLOP/s); the probes before, between and after: 100,
        // 50 (a probe the host cut in half), 100, 200. Against the higher neighbour: 1.0, 0.5, 0.33 (median 0.5);
        // against the mean of the two it would be 1.33, 0.67, 0.44, and against the start's 400 peak 0.17.
        var seconds = new Queue<double>([1.0, 2.0, 1.5]);
        var probes = new Queue<double>([100, 50, 100, 200]);
        var runs = BenchCommand.AgainstPeak(3, seconds.Dequeue, 100e9, probes.Dequeue, startPeak: 400);
        Assert.Equal(1.5, runs.Seconds, 12);
        Assert.Equal(0.5, runs.FractionOfPeak, 12);
        Assert.Equal(100.0 / 1.5 / 400, runs.FractionOfStartPeak, 12);
        Assert.Equal([100.0, 50, 100, 200], runs.Peaks);
        Assert.Empty(seconds);
        Assert.Empty(probes);                                                    // one probe before each run and one after the last
    }

    [Fact]
    public void Libtorch_gemm_probe_counts_two_flops_per_multiply_add()
    {
        double gflops = MachineLimits.GemmGflops(TorchSharp.torch.ScalarType.Float32, 64, 64, 64);
        Assert.InRange(gflops, 1e-3, 1e5);
    }
}
