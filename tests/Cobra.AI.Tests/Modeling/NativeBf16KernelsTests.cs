using System.Security.Cryptography;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>
/// The native AVX512-BF16 kernels (native/cobra_kernels.c): the GEMM and the towers' attention. Every machine of this project's kind has AVX512-BF16, so
/// where the CPU reports it the library must load; the arithmetic is held to a float64 oracle of the same bf16
/// inputs, and a row's result to itself computed alone, with another thread count, or in another batch.
/// </summary>
public sealed class NativeBf16KernelsTests
{
    public NativeBf16KernelsTests() => TorchRuntime.EnsureInitialized();

    [Fact]
    public void Loads_wherever_the_cpu_has_avx512_bf16()
    {
        bool cpu = OperatingSystem.IsLinux() && File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags", StringComparison.Ordinal) && l.Split(' ').Contains("avx512_bf16"));
        Assert.Equal(cpu, NativeBf16Kernels.CpuSupported());
        Assert.Equal(cpu && ManagedKernels.Resolve(true, Environment.GetEnvironmentVariable(NativeBf16Kernels.EnvironmentVariable), NativeBf16Kernels.EnvironmentVariable), NativeBf16Kernels.IsAvailable);
        Assert.Equal(NativeBf16Kernels.IsAvailable, NativeBf16Kernels.UnavailableReason is null);
    }

    [Fact]
    public void The_committed_library_was_built_from_the_committed_source()
    {
        string root = RepositoryRoot();
        string source = Path.Combine(root, "native", "cobra_kernels.c");
        string recorded = File.ReadAllText(Path.Combine(root, "src", "Cobra.AI", "runtimes", "linux-x64", "native", "libcobra_kernels.so.source-sha256")).Trim();
        Assert.True(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(source))) == recorded, "native/cobra_kernels.c changed since libcobra_kernels.so was built: run native/build.sh");
        Assert.True(File.Exists(Path.Combine(AppContext.BaseDirectory, NativeBf16Kernels.LibraryName)), "the library is copied beside the assembly");
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
    [InlineData(129, 600, 11, false)]                                             // past MaxRows: split by rows
    [InlineData(300, 160, 5120, true)]                                            // dt_proj's narrow K at a prompt's rows
    [InlineData(300, 1024, 37, true)]                                             // two row blocks
    [InlineData(761, 2560, 7, true)]                                              // an image prompt's prefill: eight row blocks
    [InlineData(300, 2048, 13, true)]                                             // rows 4 KB apart: copied with padded rows
    public void Equals_the_float64_sum_of_its_bf16_products(int rows, int inFeatures, int outFeatures, bool withBias)
    {
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;                                                              // Loads_wherever_the_cpu_has_avx512_bf16 says why
        }

        using var scope = torch.NewDisposeScope();
        var x = torch.randn(rows, inFeatures).to(ScalarType.BFloat16);
        var w = torch.randn(outFeatures, inFeatures).to(ScalarType.BFloat16);
        var b = withBias ? torch.randn(outFeatures).to(ScalarType.BFloat16) : null;
        Assert.True(NativeBf16Kernels.Supports(x, w, b));
        var actual = NativeBf16Kernels.Linear(x, w, b);
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
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var w = torch.randn(9, 70).to(ScalarType.BFloat16);
        var wide = torch.randn(2, 3, 140).to(ScalarType.BFloat16);
        var x = wide[.., .., ..70];                                              // [2,3,70], rows 140 apart
        var y = NativeBf16Kernels.Linear(x, w, null);
        Assert.Equal(new long[] { 2, 3, 9 }, y.shape);
        Assert.True(y.equal(NativeBf16Kernels.Linear(x.contiguous().view(6, 70), w, null).view(2, 3, 9)).all().item<bool>());

        Assert.True(NativeBf16Kernels.Supports(torch.randn(1000, 70).to(ScalarType.BFloat16), w)); // any row count, any width
        Assert.False(NativeBf16Kernels.Supports(torch.randn(2, 70), w.to(ScalarType.Float32)));      // float32: the managed GEMV's
        Assert.False(NativeBf16Kernels.Supports(torch.randn(2, 70).to(ScalarType.BFloat16), w.t().contiguous().t())); // a strided weight
        Assert.False(NativeBf16Kernels.Supports(torch.randn(2, 71).to(ScalarType.BFloat16), w));
    }

    /// <summary>A request's logits must not depend on its decode batch or the thread count.</summary>
    [Fact]
    public void A_rows_result_does_not_depend_on_the_batch_or_the_threads()
    {
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var x = torch.randn(NativeBf16Kernels.MaxRows, 2560).to(ScalarType.BFloat16);
        var w = torch.randn(1000, 2560).to(ScalarType.BFloat16);                 // 5 MB: split over the workers
        var b = torch.randn(1000).to(ScalarType.BFloat16);
        var batch = NativeBf16Kernels.Linear(x, w, b);
        foreach (int rows in new[] { 1, 2, 3, 5, 17 })
        {
            Assert.True(NativeBf16Kernels.Linear(x[..rows], w, b).equal(batch[..rows]).all().item<bool>(), $"first {rows} rows alone");
        }

        Assert.True(NativeBf16Kernels.Linear(x[7..8], w, b).equal(batch[7..8]).all().item<bool>(), "row 7 alone");

        // Prompt-sized inputs go in row blocks (here 4 of ~103 rows at K = 2560): a row's result is the same in any block.
        var prompt = torch.randn(411, 2560).to(ScalarType.BFloat16);
        var whole = NativeBf16Kernels.Linear(prompt, w, b);
        Assert.True(NativeBf16Kernels.Linear(prompt[200..230], w, b).equal(whole[200..230]).all().item<bool>(), "rows 200-229 of a 411-row prompt alone");
        Assert.True(NativeBf16Kernels.Linear(torch.cat([x, prompt[..5]]), w, b)[NativeBf16Kernels.MaxRows..].equal(whole[..5]).all().item<bool>(), "a prompt's rows behind a decode batch");

        // A prompt whose rows are 4 KB apart runs from a padded copy, split by rows: the same sums as its rows alone.
        var wide = torch.randn(150, 2048).to(ScalarType.BFloat16);
        var wideWeight = torch.randn(50, 2048).to(ScalarType.BFloat16);
        var wideWhole = NativeBf16Kernels.Linear(wide, wideWeight, null);
        Assert.True(NativeBf16Kernels.Linear(wide[141..150], wideWeight, null).equal(wideWhole[141..150]).all().item<bool>(), "rows 141-149 of a padded prompt alone");
        try
        {
            KernelWorkers.SetParallelism(3);
            Assert.True(NativeBf16Kernels.Linear(x, w, b).equal(batch).all().item<bool>(), "3 threads");
            KernelWorkers.SetParallelism(1);
            Assert.True(NativeBf16Kernels.Linear(x, w, b).equal(batch).all().item<bool>(), "1 thread");
        }
        finally
        {
            KernelWorkers.SetParallelism(Environment.ProcessorCount);
        }
    }

    [Fact]
    public void Linear_runs_it_for_every_bf16_input_and_a_row_never_depends_on_its_batch()
    {
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var w = torch.randn(30, 96).to(ScalarType.BFloat16);
        var b = torch.randn(30).to(ScalarType.BFloat16);
        var small = torch.randn(5, 96).to(ScalarType.BFloat16);
        Assert.True(Linear.Apply(small, w, b, managedKernels: true).equal(NativeBf16Kernels.Linear(small, w, b)).all().item<bool>());
        Assert.True(Linear.Apply(small, w, b, managedKernels: false).equal(torch.nn.functional.linear(small, w, b)).all().item<bool>());
        var large = torch.cat([small, torch.randn(NativeBf16Kernels.MaxRows + 60, 96).to(ScalarType.BFloat16)]); // past MaxRows: split by rows
        var y = Linear.Apply(large, w, b, managedKernels: true);
        Assert.True(y.equal(NativeBf16Kernels.Linear(large, w, b)).all().item<bool>());
        Assert.True(y[..5].equal(Linear.Apply(small, w, b, managedKernels: true)).all().item<bool>(), "a decode batch's rows with a chunk beside them");
    }

    /// <summary>The towers' epilogue (LayerScale, residual) fused into the GEMM equals, bitwise, the separate bf16 ops it replaces.</summary>
    [Theory]
    [InlineData(1, 64, 13)]                                                       // a single row: one stream, one-lane stores
    [InlineData(5, 70, 96)]                                                       // 4 x 6 tiles and a ragged row
    [InlineData(37, 1024, 45)]                                                    // N not a multiple of the 6-row tile
    [InlineData(300, 1152, 30)]                                                   // prompt-sized: row blocks
    [InlineData(203, 4096, 14)]                                                   // rows 4 KB apart (padded), split by rows
    public void The_epilogue_equals_the_separate_bf16_ops(int rows, int inFeatures, int outFeatures)
    {
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var x = torch.randn(1, rows, inFeatures).to(ScalarType.BFloat16);
        var w = (torch.randn(outFeatures, inFeatures) / Math.Sqrt(inFeatures) * 2).to(ScalarType.BFloat16);
        var b = torch.randn(outFeatures).to(ScalarType.BFloat16);
        var gamma = torch.randn(outFeatures).to(ScalarType.BFloat16);
        var residual = torch.randn(1, rows, outFeatures).to(ScalarType.BFloat16);
        var plain = NativeBf16Kernels.Linear(x, w, b);                              // [1,R,N]

        var scaled = new LinearEpilogue(Gamma: gamma, Residual: residual);
        Assert.True(NativeBf16Kernels.Supports(x, w, b, scaled));
        Assert.True(NativeBf16Kernels.Linear(x, w, b, scaled).equal(residual + (plain * gamma)).all().item<bool>(), "x + LayerScale(linear)");
        Assert.True(NativeBf16Kernels.Linear(x, w, b, new LinearEpilogue(Residual: residual)).equal(residual + plain).all().item<bool>(), "x + linear");

        Assert.False(NativeBf16Kernels.Supports(x, w, b, new LinearEpilogue(Residual: residual[.., .., ..1])), "a residual of another shape");
        Assert.False(NativeBf16Kernels.Supports(x, w, b, new LinearEpilogue(Gamma: gamma.to(ScalarType.Float32))), "a float32 gamma");
    }

    [Fact]
    public void Linear_applies_the_epilogue_as_torch_ops_where_the_kernel_does_not_run()
    {
        using var scope = torch.NewDisposeScope();
        var linear = new Cobra.AI.Modeling.Linear(24, 10, hasBias: true, ScalarType.BFloat16, torch.CPU);
        foreach (var (_, parameter) in linear.named_parameters())
        {
            parameter.copy_(torch.randn(parameter.shape) * 0.3);
        }

        var x = torch.randn(3, 24).to(ScalarType.BFloat16);
        var gamma = torch.randn(10).to(ScalarType.BFloat16);
        var residual = torch.randn(3, 10).to(ScalarType.BFloat16);
        var epilogue = new LinearEpilogue(Gamma: gamma, Residual: residual);
        linear.UseManagedKernels = false;
        var expected = residual + (torch.nn.functional.linear(x, linear.Weight, linear.Bias) * gamma);
        Assert.True(linear.Forward(x, epilogue).equal(expected).all().item<bool>(), "the device-generic path: the separate ops");
        linear.UseManagedKernels = true;
        var fused = linear.Forward(x, epilogue);
        Assert.True(NativeBf16Kernels.IsAvailable
            ? fused.equal(NativeBf16Kernels.Linear(x, linear.Weight, linear.Bias, epilogue)).all().item<bool>()
            : fused.equal(expected).all().item<bool>());
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(2, 5, 3, 7)]                                                      // odd head dim: a zero-padded pair
    [InlineData(1, 17, 2, 33)]                                                    // odd tokens: a zero-padded key pair
    [InlineData(2, 100, 4, 130)]                                                  // head dim past one 4-vector tile
    [InlineData(1, 729, 4, 72)]                                                   // SigLIP's shape (4 of its 16 heads)
    [InlineData(1, 734, 2, 64)]                                                   // DINOv2's
    public void Attention_follows_the_flash_cast_points(int batch, int tokens, int heads, int headDim)
    {
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var qkv = (torch.randn(batch, tokens, 3 * heads * headDim) * 2).to(ScalarType.BFloat16);
        Assert.True(NativeBf16Kernels.SupportsAttention(qkv, heads));
        var actual = NativeBf16Kernels.Attention(qkv, heads).to(ScalarType.Float32); // [B,N,D]
        var expected = FlashOracle(qkv, heads, normalisedProbabilities: false);
        var values = qkv.narrow(-1, 2 * heads * headDim, heads * headDim).to(ScalarType.Float32);

        // Summed in another order, a float32 exponential can round to the neighbouring bf16: that moves one
        // probability by one bf16 ulp (an output by at most 2^-8 max|v|); otherwise the one output rounding.
        var bound = (expected.abs() / 128) + (values.abs().max() / 256) + 1e-30;
        var error = (actual - expected).abs();
        Assert.True((error <= bound).all().item<bool>(), $"max error / bound {(error / bound).max().item<float>():F3}");
        double share = (actual != expected).to(ScalarType.Float64).mean().item<double>();
        Assert.InRange(share, 0, 0.01);
        if (tokens > 16)
        {
            // The test tells the cast points apart: probabilities normalised before their rounding change many outputs.
            double wrong = (actual != FlashOracle(qkv, heads, normalisedProbabilities: true)).to(ScalarType.Float64).mean().item<double>();
            Assert.True(wrong > 5 * share && wrong > 0.02, $"normalised bf16 probabilities differ in {wrong:P2} of the outputs, the kernel's flips in {share:P2}");
        }
    }

    [Fact]
    public void Attention_does_not_depend_on_the_threads_and_refuses_what_it_cannot_do()
    {
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var qkv = torch.randn(3, 40, 3 * 5 * 12).to(ScalarType.BFloat16);
        var all = NativeBf16Kernels.Attention(qkv, 5);
        Assert.True(NativeBf16Kernels.Attention(qkv[1..2], 5).equal(all[1..2]).all().item<bool>(), "one image alone");
        try
        {
            KernelWorkers.SetParallelism(1);
            Assert.True(NativeBf16Kernels.Attention(qkv, 5).equal(all).all().item<bool>(), "1 thread");
            KernelWorkers.SetParallelism(4);
            Assert.True(NativeBf16Kernels.Attention(qkv, 5).equal(all).all().item<bool>(), "4 threads");
        }
        finally
        {
            KernelWorkers.SetParallelism(Environment.ProcessorCount);
        }

        Assert.False(NativeBf16Kernels.SupportsAttention(qkv.to(ScalarType.Float32), 5));
        Assert.False(NativeBf16Kernels.SupportsAttention(qkv, 7));                 // 180 is not 3 x 7 heads
        Assert.False(NativeBf16Kernels.SupportsAttention(qkv[0], 5));              // [N, 3D]: no batch dimension
        Assert.False(NativeBf16Kernels.SupportsAttention(torch.empty(1, 0, 180, ScalarType.BFloat16), 5));
    }

    [Fact]
    public void The_towers_attention_runs_it_and_libtorchs_sdpa_with_the_kernels_off()
    {
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;
        }

        using var scope = torch.NewDisposeScope();
        var attention = new Cobra.AI.Modeling.Vision.Attention(48, 4, ScalarType.BFloat16, torch.CPU);
        foreach (var (_, parameter) in attention.named_parameters())
        {
            parameter.copy_(torch.randn(parameter.shape) * 0.2);
        }

        var x = torch.randn(2, 9, 48).to(ScalarType.BFloat16);
        Tensor P(string name) => attention.get_parameter(name)!;

        // Managed kernels on: every linear and the attention on the native kernels.
        var projected = NativeBf16Kernels.Linear(x, P("qkv.weight"), P("qkv.bias"));           // [2,9,144]
        var native = NativeBf16Kernels.Linear(NativeBf16Kernels.Attention(projected, 4), P("proj.weight"), P("proj.bias"));
        Assert.True(attention.forward(x).equal(native).all().item<bool>(), "managed kernels on: the native kernel");

        // Off: libtorch's linears and SDPA.
        ManagedKernels.Configure(attention, false);
        projected = torch.nn.functional.linear(x.reshape(18, 48), P("qkv.weight"), P("qkv.bias")).view(2, 9, 144);
        var parts = projected.reshape(2, 9, 3, 4, 12).permute(2, 0, 3, 1, 4);
        var sdpa = torch.nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2]).transpose(1, 2).reshape(18, 48);
        var generic = torch.nn.functional.linear(sdpa, P("proj.weight"), P("proj.bias")).view(2, 9, 48);
        Assert.True(attention.forward(x).equal(generic).all().item<bool>(), "managed kernels off: libtorch's SDPA");
    }

    /// <summary>Flash attention's bf16 cast points in float32 torch ops over qkv [B, N, 3D]: [B, N, D] (bf16 values).</summary>
    private static Tensor FlashOracle(Tensor qkv, int heads, bool normalisedProbabilities)
    {
        long b = qkv.shape[0], n = qkv.shape[1], d = qkv.shape[2] / 3, hd = d / heads;
        var parts = qkv.to(ScalarType.Float32).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4); // [3,B,H,N,hd]
        var scores = torch.matmul(parts[0], parts[1].transpose(-2, -1)) * (1.0 / Math.Sqrt(hd)); // [B,H,N,N]
        var e = (scores - scores.amax([-1], keepdim: true)).exp();
        var result = normalisedProbabilities
            ? torch.matmul((e / e.sum(-1, keepdim: true)).to(ScalarType.BFloat16).to(ScalarType.Float32), parts[2])
            : torch.matmul(e.to(ScalarType.BFloat16).to(ScalarType.Float32), parts[2]) / e.sum(-1, keepdim: true);
        return result.to(ScalarType.BFloat16).to(ScalarType.Float32).transpose(1, 2).reshape(b, n, d);
    }

    [Fact]
    public void The_peak_probe_runs_and_the_switch_refuses_unknown_values()
    {
        if (NativeBf16Kernels.IsAvailable)
        {
            Assert.True(float.IsFinite(NativeBf16Kernels.PeakProbe(1000)));
        }

        Assert.False(ManagedKernels.Resolve(true, "off", NativeBf16Kernels.EnvironmentVariable));
        var e = Assert.Throws<InvalidOperationException>(() => ManagedKernels.Resolve(true, "maybe", NativeBf16Kernels.EnvironmentVariable));
        Assert.Contains(NativeBf16Kernels.EnvironmentVariable, e.Message, StringComparison.Ordinal);
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
