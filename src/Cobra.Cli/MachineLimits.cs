using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.Cli;

/// <summary>
/// The machine's limits, probed in the bench's own process with the thread count the bench runs at, so every
/// figure can be held against them (performance.md): memory read bandwidth, the fp32 FMA peak of a
/// register-only microkernel at the widest vector width, and libtorch's GEMM ceilings at the model's shapes.
/// Every figure is the median of at least three runs.
/// </summary>
internal static class MachineLimits
{
    private const int Runs = 3;

    /// <summary>
    /// Runs of a GEMM probe, each ~50 ms of calls (at ~400 GFLOP/s). Four probes back to back in one idle process
    /// read 301-407 GFLOP/s as the median of three single ~10 ms calls, 316-382 this way: the rest is the host's
    /// own drift over seconds (the serve bench's ceiling moves with it; it takes the higher of two probes).
    /// </summary>
    private const int GemmRuns = 5;

    /// <summary>The model's GEMM shapes (m, k, n): prefill in_proj and out_proj at 256 tokens, a tower fc1, and a square one.</summary>
    private static readonly (string Name, long M, long K, long N)[] GemmShapes =
    [
        ("llm_in_proj_m256", 256, 2560, 10240),
        ("llm_out_proj_m256", 256, 5120, 2560),
        ("vit_fc1_m734", 734, 1024, 4096),
        ("square_2048", 2048, 2048, 2048),
    ];

    /// <summary>Runs every probe; <paramref name="readBytes"/> is the total size of the distinct read buffers.</summary>
    public static JsonObject Measure(long readBytes, int threads, bool gemms, TextWriter log)
    {
        double read = ReadBandwidthGBs(readBytes, threads);
        double fma = Fp32FmaPeakGflops(threads);
        log.WriteLine($"limits: memory read {read:F1} GB/s over {readBytes >> 20} MiB, fp32 FMA peak {fma:F0} GFLOP/s ({VectorBits} bit vectors, {threads} threads)");
        var result = new JsonObject
        {
            ["threads"] = threads,
            ["vector_bits"] = VectorBits,
            ["read_bytes"] = readBytes,
            ["read_gb_s"] = Math.Round(read, 2),
            ["fp32_fma_peak_gflops"] = Math.Round(fma, 1),
        };

        double bestBf16 = 0, bestFp32 = 0;
        if (gemms)
        {
            var shapes = new JsonObject();
            foreach (var (name, m, k, n) in GemmShapes)
            {
                double bf16 = GemmGflops(ScalarType.BFloat16, m, k, n);
                double fp32 = GemmGflops(ScalarType.Float32, m, k, n);
                shapes[name] = new JsonObject { ["bf16_gflops"] = Math.Round(bf16, 1), ["fp32_gflops"] = Math.Round(fp32, 1) };
                bestBf16 = Math.Max(bestBf16, bf16);
                bestFp32 = Math.Max(bestFp32, fp32);
                log.WriteLine($"limits: libtorch GEMM {name} ({m}x{k}x{n}): bf16 {bf16:F0}, fp32 {fp32:F0} GFLOP/s");
            }

            result["libtorch_gemm"] = shapes;
        }

        // The bf16 peak: where the native AVX512-BF16 kernels run, a register-only dot-product microkernel (the
        // same instruction the decode GEMM and oneDNN use); elsewhere the best libtorch bf16 GEMM, a lower bound
        // of the peak (fractions held against it are upper bounds: .NET 10 has no BF16 dot-product intrinsics).
        result["fp32_peak_gflops"] = Math.Round(Math.Max(fma, bestFp32), 1);
        result["bf16_libtorch_best_gflops"] = Math.Round(bestBf16, 1);
        if (NativeBf16Kernels.IsAvailable)
        {
            double dot = Bf16DotPeakGflops(threads);
            log.WriteLine($"limits: bf16 dot-product peak {dot:F0} GFLOP/s (AVX512-BF16 microkernel, {threads} threads)");
            result["bf16_dot_peak_gflops"] = Math.Round(dot, 1);
            result["bf16_peak_gflops"] = Math.Round(Math.Max(dot, bestBf16), 1);
            result["bf16_peak_source"] = "AVX512-BF16 dot-product microkernel (vdpbf16ps on registers, every thread); the best libtorch bf16 GEMM if higher";
        }
        else
        {
            result["bf16_peak_gflops"] = Math.Round(bestBf16, 1);
            result["bf16_peak_source"] = $"best libtorch bf16 GEMM (a lower bound of the peak; no dot-product probe: {NativeBf16Kernels.UnavailableReason})";
            if (CpuFlags().Contains("avx512_bf16"))
            {
                result["bf16_peak_upper_bound_gflops"] = Math.Round(2 * fma, 1);
            }
        }

        result["bf16_decode_gemm"] = NativeBf16Kernels.IsAvailable ? "native AVX512-BF16 (libcobra_kernels.so)" : $"managed GEMV / libtorch ({NativeBf16Kernels.UnavailableReason})";
        return result;
    }

    /// <summary>Bits per vector of the widest hardware-accelerated width: the probes use what the managed kernels use.</summary>
    public static int VectorBits => SimdWidth.Bits;

    /// <summary>
    /// A plain vectorised read (sum) of <paramref name="bytes"/> spread over distinct 64 MiB buffers, split over
    /// <paramref name="threads"/> threads; GB/s (1e9 bytes), median of <see cref="Runs"/>.
    /// </summary>
    public static double ReadBandwidthGBs(long bytes, int threads)
    {
        const int BufferFloats = 16 << 20;                                       // 64 MiB
        int count = (int)Math.Max(1, bytes / (BufferFloats * (long)sizeof(float)));
        var buffers = new float[count][];
        for (int i = 0; i < count; i++)
        {
            buffers[i] = GC.AllocateUninitializedArray<float>(BufferFloats);
            Array.Fill(buffers[i], 1f);                                          // touch every page
        }

        // Thread t reads its slice of every buffer, so all threads stream from DRAM together.
        int slice = BufferFloats / threads / 64 * 64;
        float sink = 0;
        var times = new double[Runs];
        for (int r = 0; r < Runs; r++)
        {
            var partial = new float[threads];
            times[r] = OnThreads(threads, t =>
            {
                float acc = 0;
                foreach (var buffer in buffers)
                {
                    acc += Sum(buffer.AsSpan(t * slice, slice));
                }

                partial[t] = acc;
            });
            sink += partial.Sum();
        }

        GC.KeepAlive(sink);
        return (double)slice * sizeof(float) * threads * count / Median(times) / 1e9;
    }

    /// <summary>
    /// Seconds for a plain vectorised read of every byte of <paramref name="tensors"/> (contiguous CPU tensors),
    /// each split over <paramref name="threads"/> threads.
    /// </summary>
    public static double ReadTensors(IEnumerable<Tensor> tensors, int threads)
    {
        var all = tensors.ToArray();
        var sinks = new float[threads];
        return OnThreads(threads, part =>
        {
            float acc = 0;
            foreach (var tensor in all)
            {
                ReadOnlySpan<float> floats = MemoryMarshal.Cast<byte, float>(tensor.bytes);
                int from = (int)((long)floats.Length * part / threads), to = (int)((long)floats.Length * (part + 1) / threads);
                acc += Sum(floats[from..to]);
            }

            sinks[part] = acc;
        });
    }

    /// <summary>Peak fp32 FMA rate: 12 independent register accumulators per thread, nothing read from memory.</summary>
    public static double Fp32FmaPeakGflops(int threads)
    {
        const int Iterations = 4_000_000;
        int lanes = VectorBits / 32;
        var times = new double[Runs];
        for (int r = 0; r < Runs; r++)
        {
            var sink = new float[threads];
            times[r] = OnThreads(threads, t => sink[t] = VectorBits switch { 512 => Fma<Simd512>(Iterations), 256 => Fma<Simd256>(Iterations), _ => Fma<Simd128>(Iterations) });
        }

        return 2.0 * lanes * 12 * Iterations * threads / Median(times) / 1e9;
    }

    /// <summary>
    /// Peak bf16 rate of the AVX512-BF16 dot-product instruction: 12 independent register chains per thread, nothing
    /// read from memory; 1.5 s of warm-up runs (this VM kind's second core needs ~1 s of load to reach full
    /// speed: one warm-up run measured 319 instead of ~460 GFLOP/s), then the median of <see cref="Runs"/>. Only where <see cref="NativeBf16Kernels.IsAvailable"/>.
    /// </summary>
    public static double Bf16DotPeakGflops(int threads, double warmUpSeconds = 1.5)
    {
        const long Iterations = 20_000_000;
        var sink = new float[threads];
        var warm = Stopwatch.StartNew();
        while (warm.Elapsed.TotalSeconds < warmUpSeconds)
        {
            OnThreads(threads, t => sink[t] += NativeBf16Kernels.PeakProbe(Iterations));
        }

        var times = new double[Runs];
        for (int r = 0; r < Runs; r++)
        {
            times[r] = OnThreads(threads, t => sink[t] += NativeBf16Kernels.PeakProbe(Iterations));
        }

        GC.KeepAlive(sink);
        return (double)NativeBf16Kernels.PeakProbeFlopsPerIteration * Iterations * threads / Median(times) / 1e9;
    }

    /// <summary>
    /// The compute peak now, between the runs of a compute-bound phase (<see cref="BenchCommand.AgainstPeak(int, Action, double, Precision, JsonObject)"/>): the
    /// probe the start's <c>bf16_peak_gflops</c> / <c>fp32_peak_gflops</c> came from, with 0.3 s of warm-up (the
    /// cores are busy already), ~0.5 s in all; where bf16 has no dot-product probe (no AVX512-BF16), null: its peak
    /// is the libtorch GEMM's at the start.
    /// </summary>
    public static double? PeakNow(Precision precision, int threads) => precision switch
    {
        Precision.Float32 => Fp32FmaPeakGflops(threads),
        _ when NativeBf16Kernels.IsAvailable => Bf16DotPeakGflops(threads, warmUpSeconds: 0.3),
        _ => null,
    };

    /// <summary>
    /// The best in-process bf16 / fp32 linear at [m, k] x [n, k]ᵀ: libtorch's, or for bf16 the native kernel's where
    /// it runs (what the model's own linear then uses). GFLOP/s, median of <see cref="Runs"/>.
    /// </summary>
    public static (double Gflops, string Kernel) BestLinearGflops(ScalarType dtype, long m, long k, long n)
    {
        double libtorch = GemmGflops(dtype, m, k, n);
        if (dtype != ScalarType.BFloat16 || !NativeBf16Kernels.IsAvailable)
        {
            return (libtorch, "libtorch");
        }

        double native = GemmGflops(m, k, n, (x, w) => NativeBf16Kernels.Linear(x, w, null).Dispose(), ScalarType.BFloat16);
        return native > libtorch ? (native, "native") : (libtorch, "libtorch");
    }

    /// <summary>libtorch's linear at [m, k] x [n, k]ᵀ in <paramref name="dtype"/>: GFLOP/s, median of <see cref="GemmRuns"/> after 1 s of warm-up.</summary>
    public static double GemmGflops(ScalarType dtype, long m, long k, long n) =>
        GemmGflops(m, k, n, (x, w) => torch.nn.functional.linear(x, w).Dispose(), dtype);

    private static double GemmGflops(long m, long k, long n, Action<Tensor, Tensor> linear, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var x = torch.randn([m, k], dtype: dtype);
        var w = torch.randn([n, k], dtype: dtype);
        // Warm-up: 1 s of the same calls. On this VM kind an idle second core needs about that much load to reach
        // full speed (a serve bench's probe right after the single-threaded model build read 222 GFLOP/s, the same
        // probe after the loads 422).
        var warm = Stopwatch.StartNew();
        while (warm.Elapsed.TotalSeconds < 1)
        {
            linear(x, w);
        }

        int reps = Math.Max(1, (int)(2e10 / (2.0 * m * k * n)));
        var times = new double[GemmRuns];
        for (int r = 0; r < GemmRuns; r++)
        {
            times[r] = BenchCommand.Time(() =>
            {
                for (int i = 0; i < reps; i++)
                {
                    linear(x, w);
                }
            }) / reps;
        }

        return 2.0 * m * k * n / Median(times) / 1e9;
    }

    private static double Median(double[] values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }

    /// <summary>Runs body(0..threads-1) on dedicated threads released together; seconds from release to the last finish.</summary>
    private static double OnThreads(int threads, Action<int> body)
    {
        using var start = new Barrier(threads + 1);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            body(t);
        })).ToArray();
        foreach (var worker in workers)
        {
            worker.Start();
        }

        start.SignalAndWait();
        var clock = Stopwatch.StartNew();
        foreach (var worker in workers)
        {
            worker.Join();
        }

        return clock.Elapsed.TotalSeconds;
    }

    private static float Sum(ReadOnlySpan<float> values) =>
        VectorBits switch { 512 => Sum<Simd512>(values), 256 => Sum<Simd256>(values), _ => Sum<Simd128>(values) };

    /// <summary>The sum of <paramref name="values"/> over four independent accumulators (whole 4-vector blocks only: a read probe).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe float Sum<TV>(ReadOnlySpan<float> values)
        where TV : struct, ISimdFloat<TV>
    {
        int lanes = TV.Lanes;
        TV a0 = default, a1 = default, a2 = default, a3 = default;
        fixed (float* p = values)
        {
            for (int i = 0; i + (4 * lanes) <= values.Length; i += 4 * lanes)
            {
                a0 = TV.Add(a0, TV.Load(p + i));
                a1 = TV.Add(a1, TV.Load(p + i + lanes));
                a2 = TV.Add(a2, TV.Load(p + i + (2 * lanes)));
                a3 = TV.Add(a3, TV.Load(p + i + (3 * lanes)));
            }
        }

        return TV.SumOfBoth(TV.Add(a0, a1), TV.Add(a2, a3));
    }

    /// <summary>12 independent FMA chains in registers, nothing read from memory (the FMA peak probe's kernel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Fma<TV>(int iterations)
        where TV : struct, ISimdFloat<TV>
    {
        var x = TV.Broadcast(0.999f);
        var y = TV.Broadcast(1e-7f);
        TV a0 = TV.Broadcast(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (int i = 0; i < iterations; i++)
        {
            a0 = TV.MultiplyAdd(a0, x, y);
            a1 = TV.MultiplyAdd(a1, x, y);
            a2 = TV.MultiplyAdd(a2, x, y);
            a3 = TV.MultiplyAdd(a3, x, y);
            a4 = TV.MultiplyAdd(a4, x, y);
            a5 = TV.MultiplyAdd(a5, x, y);
            a6 = TV.MultiplyAdd(a6, x, y);
            a7 = TV.MultiplyAdd(a7, x, y);
            a8 = TV.MultiplyAdd(a8, x, y);
            a9 = TV.MultiplyAdd(a9, x, y);
            a10 = TV.MultiplyAdd(a10, x, y);
            a11 = TV.MultiplyAdd(a11, x, y);
        }

        return TV.SumOfBoth(TV.Add(TV.Add(a0, a1), TV.Add(a2, a3)), TV.Add(TV.Add(a4, a5), TV.Add(a6, a7)))
            + TV.SumOfBoth(TV.Add(a8, a9), TV.Add(a10, a11));
    }

    private static HashSet<string> CpuFlags()
    {
        try
        {
            string? line = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) : null;
            return line is null ? [] : [.. line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries)];
        }
        catch (IOException)
        {
            return [];
        }
    }
}
