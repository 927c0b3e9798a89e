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
    public void Libtorch_gemm_probe_counts_two_flops_per_multiply_add()
    {
        double gflops = MachineLimits.GemmGflops(TorchSharp.torch.ScalarType.Float32, 64, 64, 64);
        Assert.InRange(gflops, 1e-3, 1e5);
    }
}
