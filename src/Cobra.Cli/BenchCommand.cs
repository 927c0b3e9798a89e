using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra bench</c>: the full-size Mamba-2.8B language model (real dimensions, random weights, nothing
/// downloaded) on this machine: prefill with each scan implementation, the scan alone, recurrent decode,
/// and the weight-streaming limit measured in the same process, plus peak RSS.
/// </summary>
internal static class BenchCommand
{
    internal static readonly HashSet<string> ValueOptions = ["part", "precision", "prefill-tokens", "decode-tokens", "layers", "threads", "question-tokens", "tokens-per-request", "clients", "tokenizer", "read-bytes", "image-every", "requests-per-client", "state-store"];
    internal static readonly HashSet<string> Flags = ["skip-sequential", "json", "skip-vision"];

    /// <summary>Runs the bench; progress goes to <paramref name="stdout"/>, or with --json to <paramref name="stderr"/> (stdout is then the JSON alone).</summary>
    public static int Run(CliArguments cli, TextWriter stdout, TextWriter stderr)
    {
        var log = cli.Has("json") ? stderr : stdout;
        var precisions = (cli.Get("precision") ?? (cli.Get("part") == "serve" ? "bf16" : "all")) switch
        {
            "all" => new[] { Precision.Float32, Precision.BFloat16 },
            "fp32" => [Precision.Float32],
            "bf16" => [Precision.BFloat16],
            var other => throw new UsageException($"--precision must be fp32, bf16 or all, not '{other}'."),
        };
        int prefillTokens = cli.GetInt("prefill-tokens", 800, 1, 100_000);
        int decodeTokens = cli.GetInt("decode-tokens", 32, 2, 10_000);
        int threads = cli.GetInt("threads", Environment.ProcessorCount, 1, 1024);
        var config = new MambaConfig { DModel = 2560, NLayer = cli.GetInt("layers", 64, 1, 64), VocabSize = 50277 };

        TorchRuntime.EnsureInitialized();
        long readBytes = cli.GetInt("read-bytes", 2048, 64, 1 << 20) * (1L << 20); // MiB
        TorchRuntime.SetCpuThreads(threads);                                     // libtorch and the managed kernels alike
        var report = new JsonObject
        {
            ["model"] = $"Mamba-2.8B dims (d_model {config.DModel}, {config.NLayer} layers, d_inner {config.DInner}, d_state {config.DState}, vocab {config.PaddedVocabSize}), random weights",
            ["threads"] = threads,
            ["prefill_tokens"] = prefillTokens,
            ["simd_lanes"] = Cobra.AI.Modeling.Kernels.SimdWidth.Bits / 32,            // float32 lanes of the GEMV (decode's weight stream)
            ["elementwise_simd_lanes"] = System.Numerics.Vector<float>.Count,     // the scan, conv and step kernels (Vector<T>)
            ["managed_kernels"] = ManagedKernels.Resolve(true),
        };
        string part = cli.Get("part") ?? "llm";
        if (part is not ("llm" or "vision" or "load" or "serve" or "statestore"))
        {
            throw new UsageException($"--part must be llm, vision, load, serve or statestore, not '{part}'.");
        }

        // The limits every figure is held against, probed in this process at this thread count.
        var limits = MachineLimits.Measure(readBytes, threads, gemms: part is "llm" or "vision", log);
        report["limits"] = limits;

        // The probes' buffers (GiBs of arrays) are not the model's footprint: return them to the OS before
        // the peak-RSS count restarts for each precision.
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        report["read_gb_s"] = limits["read_gb_s"]!.DeepClone();
        report["bf16_peak_gflops"] = limits["bf16_peak_gflops"]!.DeepClone();
        report["fp32_peak_gflops"] = limits["fp32_peak_gflops"]!.DeepClone();

        foreach (var precision in precisions)
        {
            ResetPeakRss();
            report[precision == Precision.Float32 ? "fp32" : "bf16"] = part switch
            {
                "llm" => BenchPrecision(config, precision, prefillTokens, decodeTokens, !cli.Has("skip-sequential"), limits, log),
                "vision" => VisionBench.Run(config, precision, cli.GetInt("question-tokens", 30, 1, 2048), limits, log),
                "serve" => ServeBench.Run(precision, config.NLayer, cli.GetInt("tokens-per-request", 128, 1, 4096), ParseClients(cli.Get("clients") ?? "1,4,16,64"), cli.Get("tokenizer"), cli.GetInt("image-every", 4, 0, 1024), cli.GetInt("requests-per-client", 1, 1, 1024), limits, log),
                "statestore" => StateStoreBench.Run(config, precision, cli.Get("state-store") ?? "redis://127.0.0.1:6379", cli.GetInt("question-tokens", 30, 1, 2048), cli.Has("skip-vision"), log),
                _ => LoadBench.Run(config, precision, log),
            };
            report[precision == Precision.Float32 ? "fp32" : "bf16"]!["peak_rss_mib"] = PeakRssMiB();
        }

        report["peak_rss_mib"] = PeakRssMiB();
        stdout.WriteLine(cli.Has("json") ? report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) : $"peak RSS {report["peak_rss_mib"]} MiB");
        return 0;
    }

    private static JsonObject BenchPrecision(MambaConfig config, Precision precision, int prefillTokens, int decodeTokens, bool sequential, JsonObject limits, TextWriter log)
    {
        var dtype = precision.ToScalarType();
        var name = precision == Precision.Float32 ? "fp32" : "bf16";
        var result = new JsonObject();
        var clock = Stopwatch.StartNew();
        using var model = new MambaForCausalLM(config, dtype, torch.CPU);
        MambaRandomInit.Fill(model, seed: 2176);
        long weightBytes = model.parameters().Sum(p => p.NumberOfElements * p.ElementSize);
        result["init_s"] = Seconds(clock.Elapsed);
        result["weight_gib"] = Math.Round(weightBytes / (double)(1L << 30), 2);
        log.WriteLine($"[{name}] model ready in {clock.Elapsed.TotalSeconds:F1} s, {weightBytes / 1e9:F2} GB of weights");

        // 1. The weight-streaming limit: GEMVs over in_proj-sized matrices in the model dtype, once re-reading
        //    one matrix (as torchsharp.md §3 measured it; partly served from L3) and once cycling through
        //    distinct matrices the way decode does (every weight read from DRAM).
        double sameGBs = MeasureStreaming(dtype, distinctMatrices: 1);
        double distinctGBs = MeasureStreaming(dtype, distinctMatrices: 8);
        double limitMs = weightBytes / (sameGBs * 1e9) * 1e3;
        double dramLimitMs = weightBytes / (distinctGBs * 1e9) * 1e3;
        result["gemv_stream_gb_s"] = Math.Round(sameGBs, 1);
        result["gemv_stream_uncached_gb_s"] = Math.Round(distinctGBs, 1);
        result["decode_limit_ms_per_token"] = Math.Round(limitMs, 1);
        result["decode_limit_uncached_ms_per_token"] = Math.Round(dramLimitMs, 1);
        log.WriteLine($"[{name}] libtorch GEMV streaming {sameGBs:F1} GB/s (one matrix), {distinctGBs:F1} GB/s (uncached) -> decode limit {limitMs:F0} / {dramLimitMs:F0} ms/token");

        // 2. The scan alone, one real-size layer ([1, L, 5120] x 16 states), per implementation.
        var scans = new JsonObject();
        foreach (var (scanName, scan) in ScanImplementations(sequential))
        {
            double ms = TimeScanMs(config, prefillTokens, scan);
            scans[scanName] = Math.Round(ms * config.NLayer, 1);
            log.WriteLine($"[{name}] scan only, {config.NLayer} layers x {prefillTokens} tokens, {scanName}: {ms * config.NLayer:F0} ms");
        }

        result["scan_ms_all_layers"] = scans;

        // 3. Whole prefill per scan implementation, then decode after the fast prefill.
        var prefill = new JsonObject();
        using var embeds = torch.randn([1, prefillTokens, config.DModel], dtype: dtype).mul_(0.1);
        foreach (var (scanName, scan) in ScanImplementations(sequential))
        {
            using var state = model.NewState();
            double s = Time(() => model.Forward(embeds, state, scan: scan).Dispose());
            prefill[scanName] = Math.Round(s, 2);
            log.WriteLine($"[{name}] prefill {prefillTokens} tokens, {scanName} scan: {s:F2} s");
        }

        result["prefill_s"] = prefill;

        // The default path (what the engine runs), median of three, each run against the peak probed around it.
        var prefillRuns = AgainstPeak(3, () =>
        {
            using var state = model.NewState();
            model.Forward(embeds, state).Dispose();
        }, prefillTokens * GemmFlopsPerToken(config), precision, limits);
        double prefillGflops = prefillRuns.Gflops;
        result["prefill"] = new JsonObject
        {
            ["seconds"] = Math.Round(prefillRuns.Seconds, 3),
            ["gflops"] = Math.Round(prefillGflops, 1),
            ["fraction_of_peak"] = Math.Round(prefillRuns.FractionOfPeak, 3),
            ["fraction_of_start_peak"] = Math.Round(prefillRuns.FractionOfStartPeak, 3),
            ["peak_gflops_around_runs"] = prefillRuns.PeaksJson(),
        };
        log.WriteLine($"[{name}] prefill {prefillTokens} tokens: {prefillRuns.Seconds:F2} s, {prefillGflops:F0} GFLOP/s = {prefillRuns.FractionOfPeak:P0} of the peak probed around each run ({prefillRuns.PeaksText()} GFLOP/s; {prefillRuns.FractionOfStartPeak:P0} of the {PeakGflops(limits, precision):F0} at the start)");

        var decode = BenchDecode(model, weightBytes, embeds, decodeTokens, limitMs, dramLimitMs, name, log);
        double startReadLimitMs = weightBytes / (limits["read_gb_s"]!.GetValue<double>() * 1e9) * 1e3;
        double readLimitMs = weightBytes / (decode["read_gb_s"]!.GetValue<double>() * 1e9) * 1e3;
        double median = decode["median_ms_per_token"]!.GetValue<double>();
        decode["read_limit_ms_per_token"] = Math.Round(readLimitMs, 1);
        decode["ratio_to_read_limit"] = Math.Round(median / readLimitMs, 3);
        decode["start_read_limit_ms_per_token"] = Math.Round(startReadLimitMs, 1);
        decode["ratio_to_start_read_limit"] = Math.Round(median / startReadLimitMs, 3);
        log.WriteLine($"[{name}] decode {median} ms/token = {decode["ratio_to_read_limit"]}x the memory read limit ({readLimitMs:F0} ms at {decode["read_gb_s"]} GB/s, read between the decode rounds; {decode["ratio_to_start_read_limit"]}x the {startReadLimitMs:F0} ms of the probe at the start)");
        result["decode"] = decode;
        return result;
    }

    /// <summary>GEMM FLOPs of one token through every layer (in_proj, x_proj, dt_proj, out_proj), as performance.md counts them.</summary>
    internal static double GemmFlopsPerToken(MambaConfig c) =>
        2.0 * c.NLayer * (((double)c.DModel * 2 * c.DInner) + ((double)c.DInner * (c.DtRank + (2 * c.DState))) + ((double)c.DtRank * c.DInner) + ((double)c.DInner * c.DModel));

    /// <summary>The peak a compute-bound phase in <paramref name="precision"/> is held against.</summary>
    internal static double PeakGflops(JsonObject limits, Precision precision) =>
        limits[precision == Precision.BFloat16 ? "bf16_peak_gflops" : "fp32_peak_gflops"]!.GetValue<double>();

    /// <summary>Decode rounds, each after a read of the weights (<see cref="BenchDecode"/>).</summary>
    private const int DecodeRounds = 4;

    /// <summary>
    /// <paramref name="runs"/> runs of a compute-bound phase of <paramref name="flops"/>, each between two probes of
    /// the peak (<see cref="MachineLimits.PeakNow"/>), each held against the higher of the two around it; the median
    /// run time and the median of those fractions. This VM kind's speed drifts by 10-20 % over tens of seconds (the
    /// same tower pass read 60 % of a 440 GFLOP/s probe taken at the start in one run and 78 % of 379 in the next),
    /// so a fraction held against a probe taken minutes earlier says as much about the drift as about the code; and
    /// a probe is sometimes cut to about half by the host (168 at the start, then 424-449, once 229), which reads as
    /// interference, not as a lower ceiling: the higher probe is the conservative bound.
    /// Without a probe for the precision, every run is held against the start's peak.
    /// </summary>
    internal static BracketedRuns AgainstPeak(int runs, Action action, double flops, Precision precision, JsonObject limits)
    {
        int threads = limits["threads"]!.GetValue<int>();
        double startPeak = PeakGflops(limits, precision);
        return AgainstPeak(runs, () => Time(action), flops, () => MachineLimits.PeakNow(precision, threads) ?? startPeak, startPeak);
    }

    /// <summary><see cref="AgainstPeak(int, Action, double, Precision, JsonObject)"/>'s arithmetic: <paramref name="run"/> returns a run's seconds, <paramref name="probe"/> the peak now (GFLOP/s).</summary>
    internal static BracketedRuns AgainstPeak(int runs, Func<double> run, double flops, Func<double> probe, double startPeak)
    {
        var peaks = new double[runs + 1];
        var seconds = new double[runs];
        var fractions = new double[runs];
        peaks[0] = probe();
        for (int r = 0; r < runs; r++)
        {
            seconds[r] = run();
            peaks[r + 1] = probe();
            fractions[r] = flops / seconds[r] / 1e9 / Math.Max(peaks[r], peaks[r + 1]);
        }

        double median = seconds.Order().ElementAt(runs / 2);
        double gflops = flops / median / 1e9;
        return new BracketedRuns(median, gflops, fractions.Order().ElementAt(runs / 2), gflops / startPeak, peaks);
    }

    /// <summary>What <see cref="AgainstPeak(int, Action, double, Precision, JsonObject)"/> measured: the median time and its rate, the median fraction of the peak around each run, the median run against the start's peak, and the probes (one before each run and one after the last), GFLOP/s.</summary>
    internal sealed record BracketedRuns(double Seconds, double Gflops, double FractionOfPeak, double FractionOfStartPeak, double[] Peaks)
    {
        /// <summary>The probes as a JSON array.</summary>
        public JsonArray PeaksJson() => new(Peaks.Select(p => (JsonNode)Math.Round(p, 1)).ToArray());

        /// <summary>The probes for the log: "424, 417, 440, 229".</summary>
        public string PeaksText() => string.Join(", ", Peaks.Select(p => p.ToString("F0", CultureInfo.InvariantCulture)));
    }

    internal static double Median(int runs, Action action)
    {
        var times = Enumerable.Range(0, runs).Select(_ => Time(action)).Order().ToArray();
        return times[runs / 2];
    }

    /// <summary>
    /// Decode after a prefill, in <see cref="DecodeRounds"/> rounds, with a plain read of every byte of the weights
    /// (distinct buffers of GBs, the memory decode streams) before each round and after the last: on this VM kind the
    /// read rate moved 20-56 GB/s within minutes, so the read limit is the median of reads taken in the same seconds
    /// as the tokens it bounds (<c>read_gb_s</c>), not only of the probe at the start.
    /// </summary>
    private static JsonObject BenchDecode(MambaForCausalLM model, long weightBytes, Tensor embeds, int decodeTokens, double limitMs, double dramLimitMs, string name, TextWriter log)
    {
        using var state = model.NewState();
        model.Forward(embeds, state).Dispose();
        double rssBefore = RssMiB();
        var weights = model.parameters().ToArray();
        var perToken = new List<double>();
        var reads = new List<double>();
        void ReadWeights() => reads.Add(weightBytes / MachineLimits.ReadTensors(weights, Cobra.AI.Modeling.Kernels.KernelWorkers.Parallelism) / 1e9); // GB/s
        long token = 1;
        for (int round = 0; round < DecodeRounds; round++)
        {
            ReadWeights();
            int tokens = (decodeTokens * (round + 1) / DecodeRounds) - (decodeTokens * round / DecodeRounds);
            for (int i = 0; i < tokens; i++)
            {
                using var scope = torch.NewDisposeScope();
                var clock = Stopwatch.StartNew();
                var logits = model.Step(torch.tensor(new[] { token }), state);
                token = logits.argmax(-1).item<long>();
                perToken.Add(clock.Elapsed.TotalMilliseconds);
            }
        }

        ReadWeights();
        perToken.Sort();
        reads.Sort();
        double median = perToken[perToken.Count / 2];
        double readGbs = reads[reads.Count / 2];
        log.WriteLine($"[{name}] decode median {median:F0} ms/token ({median / limitMs:F2}x / {median / dramLimitMs:F2}x the streaming limits), weights read at {reads[0]:F1}-{reads[^1]:F1} GB/s between rounds, RSS {rssBefore:F0} -> {RssMiB():F0} MiB");
        return new JsonObject
        {
            ["median_ms_per_token"] = Math.Round(median, 1),
            ["ratio_to_streaming_limit"] = Math.Round(median / limitMs, 2),
            ["ratio_to_uncached_streaming_limit"] = Math.Round(median / dramLimitMs, 2),
            ["read_gb_s"] = Math.Round(readGbs, 2),
            ["read_gb_s_range"] = new JsonArray(Math.Round(reads[0], 2), Math.Round(reads[^1], 2)),
            ["rss_growth_mib"] = Math.Round(RssMiB() - rssBefore, 1),
        };
    }

    private static IEnumerable<(string Name, ScanImplementation Scan)> ScanImplementations(bool sequential)
    {
        yield return ("cpu_fused", SelectiveScanCpu.Run);
        yield return ("chunked", (in ScanInputs i, Tensor? s) => SelectiveScan.Chunked(i, s));
        if (sequential)
        {
            yield return ("sequential", SelectiveScan.Sequential);
        }
    }

    private static double TimeScanMs(MambaConfig config, int length, ScanImplementation scan)
    {
        using var scope = torch.NewDisposeScope();
        var g = new Generator(7);
        var inputs = new ScanInputs(
            U: torch.randn([1, length, config.DInner], generator: g),
            Delta: torch.randn([1, length, config.DInner], generator: g),
            A: torch.rand([config.DInner, config.DState], generator: g).mul_(15).add_(1).neg_(),
            B: torch.randn([1, length, config.DState], generator: g),
            C: torch.randn([1, length, config.DState], generator: g),
            DSkip: torch.randn([config.DInner], generator: g),
            Z: torch.randn([1, length, config.DInner], generator: g),
            DeltaBias: torch.rand([config.DInner], generator: g).mul_(4).sub_(6));
        var times = Enumerable.Range(0, 3).Select(_ => Time(() =>
        {
            using var inner = torch.NewDisposeScope();
            scan(inputs, null);
        })).Order().ToArray();
        return times[1] * 1e3;
    }

    private static double MeasureStreaming(ScalarType dtype, int distinctMatrices)
    {
        using var scope = torch.NewDisposeScope();
        var weights = Enumerable.Range(0, distinctMatrices).Select(_ => torch.randn([10240, 2560], dtype: dtype)).ToArray();
        var x = torch.randn([1, 2560], dtype: dtype);
        foreach (var w in weights)
        {
            torch.nn.functional.linear(x, w).Dispose();
        }

        int reps = Math.Max(1, 48 / distinctMatrices);
        double s = Time(() =>
        {
            for (int i = 0; i < reps; i++)
            {
                foreach (var w in weights)
                {
                    torch.nn.functional.linear(x, w).Dispose();
                }
            }
        });
        return weights.Sum(w => w.NumberOfElements * w.ElementSize) * (double)reps / s / 1e9;
    }

    private static int[] ParseClients(string text)
    {
        var counts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(c => int.TryParse(c, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int n) && n is >= 1 and <= 256 ? n : throw new UsageException($"--clients must be a comma-separated list of counts in [1, 256], not '{text}'."))
            .ToArray();
        return counts.Length > 0 ? counts : throw new UsageException("--clients needs at least one count.");
    }

    internal static double Time(Action action)
    {
        var clock = Stopwatch.StartNew();
        action();
        return clock.Elapsed.TotalSeconds;
    }

    private static double Seconds(TimeSpan t) => Math.Round(t.TotalSeconds, 2);

    internal static double RssMiB() => StatusKiB("VmRSS:") / 1024.0;

    internal static double PeakRssMiB() => Math.Round(StatusKiB("VmHWM:") / 1024.0, 0);

    /// <summary>Restarts the peak-RSS count (Linux: "5" to /proc/self/clear_refs), so each precision reports its own.</summary>
    private static void ResetPeakRss()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Not Linux or not permitted: the peak then covers the whole process.
        }
    }

    private static double StatusKiB(string field)
    {
        if (!File.Exists("/proc/self/status"))
        {
            return double.NaN;
        }

        string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(field, StringComparison.Ordinal));
        return line is null ? double.NaN : double.Parse(line[field.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
    }
}
