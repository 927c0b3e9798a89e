using System.Security.Cryptography;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>
/// The native AVX512-BF16 GEMM (native/cobra_kernels.c). Every machine of this project's kind has AVX512-BF16, so
/// where the CPU reports it the library must load; the arithmetic is held to a float64 oracle of the same bf16
/// inputs, and a row's result to itself computed alone, with another thread count, or in another batch.
/// </summary>
public sealed class NativeBf16GemmTests
{
    public NativeBf16GemmTests() => TorchRuntime.EnsureInitialized();

    [Fact]
    public void Loads_wherever_the_cpu_has_avx512_bf16()
    {
        bool cpu = OperatingSystem.IsLinux() && File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags", StringComparison.Ordinal) && l.Split(' ').Contains("avx512_bf16"));
        Assert.Equal(cpu, NativeBf16Gemm.CpuSupported());
        Assert.Equal(cpu && ManagedKernels.Resolve(true, Environment.GetEnvironmentVariable(NativeBf16Gemm.EnvironmentVariable), NativeBf16Gemm.EnvironmentVariable), NativeBf16Gemm.IsAvailable);
        Assert.Equal(NativeBf16Gemm.IsAvailable, NativeBf16Gemm.UnavailableReason is null);
    }

    [Fact]
    public void The_committed_library_was_built_from_the_committed_source()
    {
        string root = RepositoryRoot();
        string source = Path.Combine(root, "native", "cobra_kernels.c");
        string recorded = File.ReadAllText(Path.Combine(root, "src", "Cobra.AI", "runtimes", "linux-x64", "native", "libcobra_kernels.so.source-sha256")).Trim();
        Assert.True(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(source))) == recorded, "native/cobra_kernels.c changed since libcobra_kernels.so was built: run native/build.sh");
        Assert.True(File.Exists(Path.Combine(AppContext.BaseDirectory, NativeBf16Gemm.LibraryName)), "the library is copied beside the assembly");
    }

    [Theory]
    [InlineData(1, 1, 1, false)]
    [InlineData(1, 31, 7, true)]                                                  // K inside one masked tail
    [InlineData(1, 2560, 10240, false)]
    [InlineData(2, 33, 13, true)]                                                 // one block and a 1-element tail
    [InlineData(3, 160, 5121, true)]                                              // N not a multiple of the 6-row tile
    [InlineData(4, 5120, 192, false)]
    [InlineData(5, 100, 2, true)]
    [InlineData(16, 2560, 1001, true)]
    [InlineData(37, 64, 45, false)]
    [InlineData(64, 1024, 257, true)]
    public void Equals_the_float64_sum_of_its_bf16_products(int rows, int inFeatures, int outFeatures, bool withBias)
    {
        if (!NativeBf16Gemm.IsAvailable)
        {
            return;                                                              // Loads_wherever_the_cpu_has_avx512_bf16 says why
        }

        using var scope = torch.NewDisposeScope();
        var x = torch.randn(rows, inFeatures).to(ScalarType.BFloat16);
        var w = torch.randn(outFeatures, inFeatures).to(ScalarType.BFloat16);
        var b = withBias ? torch.randn(outFeatures).to(ScalarType.BFloat16) : null;
        Assert.True(NativeBf16Gemm.Supports(x, w, b));
        var actual = NativeBf16Gemm.Linear(x, w, b);
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        Assert.Equal(new long[] { rows, outFeatures }, actual.shape);

        // float32 sums of exact products differ from the float64 sum by at most ~K ulps of Σ|x w|; then one bf16 rounding.
        var expected = torch.nn.functional.linear(x.to(ScalarType.Float64), w.to(ScalarType.Float64), b?.to(ScalarType.Float64));
        var magnitude = torch.nn.functional.linear(x.to(ScalarType.Float64).abs(), w.to(ScalarType.Float64).abs(), b?.to(ScalarType.Float64).abs());
        var bound = (expected.abs() * (1.0 / 256)) + (magnitude * (inFeatures * 1.2e-7)) + 1e-30;
        var error = (actual.to(ScalarType.Float64) - expected).abs();
        Assert.True((error <= bound).all().item<bool>(), $"max error / bound {(error / bound).max().item<double>():F3}");
    }

    [Fact]
    public void Takes_leading_dimensions_and_strided_rows_and_refuses_what_it_cannot_do()
    {
        if (!NativeBf16Gemm.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var w = torch.randn(9, 70).to(ScalarType.BFloat16);
        var wide = torch.randn(2, 3, 140).to(ScalarType.BFloat16);
        var x = wide[.., .., ..70];                                              // [2,3,70], rows 140 apart
        var y = NativeBf16Gemm.Linear(x, w, null);
        Assert.Equal(new long[] { 2, 3, 9 }, y.shape);
        Assert.True(y.equal(NativeBf16Gemm.Linear(x.contiguous().view(6, 70), w, null).view(2, 3, 9)).all().item<bool>());

        Assert.False(NativeBf16Gemm.Supports(torch.randn(NativeBf16Gemm.MaxRows + 1, 70).to(ScalarType.BFloat16), w));
        Assert.False(NativeBf16Gemm.Supports(torch.randn(2, 70), w.to(ScalarType.Float32)));      // float32: the managed GEMV's
        Assert.False(NativeBf16Gemm.Supports(torch.randn(2, 70).to(ScalarType.BFloat16), w.t().contiguous().t())); // a strided weight
        Assert.False(NativeBf16Gemm.Supports(torch.randn(2, 71).to(ScalarType.BFloat16), w));
    }

    /// <summary>A request's logits must not depend on its decode batch or the thread count.</summary>
    [Fact]
    public void A_rows_result_does_not_depend_on_the_batch_or_the_threads()
    {
        if (!NativeBf16Gemm.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var x = torch.randn(NativeBf16Gemm.MaxRows, 2560).to(ScalarType.BFloat16);
        var w = torch.randn(1000, 2560).to(ScalarType.BFloat16);                 // 5 MB: split over the workers
        var b = torch.randn(1000).to(ScalarType.BFloat16);
        var batch = NativeBf16Gemm.Linear(x, w, b);
        foreach (int rows in new[] { 1, 2, 3, 5, 17 })
        {
            Assert.True(NativeBf16Gemm.Linear(x[..rows], w, b).equal(batch[..rows]).all().item<bool>(), $"first {rows} rows alone");
        }

        Assert.True(NativeBf16Gemm.Linear(x[7..8], w, b).equal(batch[7..8]).all().item<bool>(), "row 7 alone");
        try
        {
            KernelWorkers.SetParallelism(3);
            Assert.True(NativeBf16Gemm.Linear(x, w, b).equal(batch).all().item<bool>(), "3 threads");
            KernelWorkers.SetParallelism(1);
            Assert.True(NativeBf16Gemm.Linear(x, w, b).equal(batch).all().item<bool>(), "1 thread");
        }
        finally
        {
            KernelWorkers.SetParallelism(Environment.ProcessorCount);
        }
    }

    [Fact]
    public void Linear_runs_it_for_decode_sized_bf16_inputs_and_libtorch_past_the_limit()
    {
        if (!NativeBf16Gemm.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var w = torch.randn(30, 96).to(ScalarType.BFloat16);
        var b = torch.randn(30).to(ScalarType.BFloat16);
        var small = torch.randn(5, 96).to(ScalarType.BFloat16);
        Assert.True(Linear.Apply(small, w, b, managedKernels: true).equal(NativeBf16Gemm.Linear(small, w, b)).all().item<bool>());
        Assert.True(Linear.Apply(small, w, b, managedKernels: false).equal(torch.nn.functional.linear(small, w, b)).all().item<bool>());
        var large = torch.randn(NativeBf16Gemm.MaxRows + 1, 96).to(ScalarType.BFloat16);
        Assert.True(Linear.Apply(large, w, b, managedKernels: true).equal(torch.nn.functional.linear(large, w, b)).all().item<bool>());
    }

    [Fact]
    public void The_peak_probe_runs_and_the_switch_refuses_unknown_values()
    {
        if (NativeBf16Gemm.IsAvailable)
        {
            Assert.True(float.IsFinite(NativeBf16Gemm.PeakProbe(1000)));
        }

        Assert.False(ManagedKernels.Resolve(true, "off", NativeBf16Gemm.EnvironmentVariable));
        var e = Assert.Throws<InvalidOperationException>(() => ManagedKernels.Resolve(true, "maybe", NativeBf16Gemm.EnvironmentVariable));
        Assert.Contains(NativeBf16Gemm.EnvironmentVariable, e.Message, StringComparison.Ordinal);
    }

    private static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "Cobra.AI.sln")))
            {
                return directory.FullName;
            }
        }

        throw new DirectoryNotFoundException($"no Cobra.AI.sln above {AppContext.BaseDirectory}");
    }
}
