using System.Diagnostics;
using System.Text.Json.Nodes;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra bench --part load</c>: writes the full-size Mamba-2.8B with random weights to a safetensors file in
/// the temp folder, then loads it back through the strict loader into fresh parameters (twice: first-touch of
/// fresh memory, then into already-touched memory), next to the file's read speed and a memory copy, in GB/s.
/// </summary>
internal static class LoadBench
{
    public static JsonObject Run(MambaConfig config, Precision precision, TextWriter log)
    {
        var dtype = precision.ToScalarType();
        string name = precision == Precision.Float32 ? "fp32" : "bf16";
        string path = Path.Combine(Path.GetTempPath(), $"cobra-load-bench-{Environment.ProcessId}.safetensors");
        try
        {
            long bytes;
            using (var source = new MambaForCausalLM(config, dtype, torch.CPU))
            {
                MambaRandomInit.Fill(source, 5);
                var tensors = source.state_dict().Select(kv => ("llm_backbone.llm." + kv.Key, kv.Value)).ToList();
                bytes = tensors.Sum(t => t.Value.NumberOfElements * t.Value.ElementSize);
                SafetensorsWriter.Write(path, tensors);
            }

            double readGBs = bytes / Seconds(() => ReadFile(path)) / 1e9;
            using var target = new MambaForCausalLM(config, dtype, torch.CPU);
            double fresh = bytes / Seconds(() => Load(path, target)) / 1e9;
            double touched = bytes / Seconds(() => Load(path, target)) / 1e9;
            double copy = MemoryCopyGBs();
            log.WriteLine($"[{name}] load {bytes / 1e9:F2} GB: {fresh:F2} GB/s into fresh parameters, {touched:F2} GB/s into touched ones; file read {readGBs:F2} GB/s (page cache), memory copy {copy:F1} GB/s");
            return new JsonObject
            {
                ["bytes"] = bytes,
                ["load_fresh_gb_s"] = Math.Round(fresh, 2),
                ["load_touched_gb_s"] = Math.Round(touched, 2),
                ["file_read_gb_s"] = Math.Round(readGBs, 2),
                ["memory_copy_gb_s"] = Math.Round(copy, 1),
            };
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void Load(string path, MambaForCausalLM target)
    {
        using var file = SafetensorsFile.Open(path);
        using var part = LanguageModelLoader.ModulePart(file, "llm_backbone").WithPrefix("llm.");
        StateDictLoader.Load(target, part, MambaForCausalLM.TiedKeys);
    }

    private static void ReadFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var buffer = new byte[1 << 22];
        while (stream.Read(buffer) > 0)
        {
        }
    }

    private static double MemoryCopyGBs()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.ones(1L << 28, dtype: ScalarType.Float32);
        var b = torch.zeros(1L << 28, dtype: ScalarType.Float32);
        b.copy_(a);
        double s = Seconds(() => b.copy_(a));
        return 2.0 * a.NumberOfElements * 4 / s / 1e9;                           // read + write
    }

    private static double Seconds(Action action)
    {
        var clock = Stopwatch.StartNew();
        action();
        return clock.Elapsed.TotalSeconds;
    }
}
