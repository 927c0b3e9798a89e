using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Cobra.AI;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra bench --part serve</c>: a mid-size random Mamba (d_model 1024, 24 layers, byte-level vocabulary)
/// behind the OpenAI endpoints on loopback; 1, 4, 16 and 64 concurrent streaming clients each ask for the
/// same number of tokens. Reports aggregate tokens/s and latency percentiles, against one client doing the
/// same requests one after another.
/// </summary>
internal static class ServeBench
{
    public static JsonObject Run(Precision precision, int tokensPerRequest, TextWriter log)
    {
        string root = Directory.CreateTempSubdirectory("cobra-serve-bench-").FullName;
        try
        {
            WriteRandomModel(root, precision.ToScalarType());
            using var client = CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = root, Device = "cpu", Precision = precision == Precision.BFloat16 ? "bf16" : "fp32", MaxConcurrentRequests = 64 }).GetAwaiter().GetResult();
            return RunAsync(client, tokensPerRequest, log).GetAwaiter().GetResult();
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static async Task<JsonObject> RunAsync(IChatClient chat, int tokens, TextWriter log)
    {
        var (app, addresses) = await OpenAIServerHost.StartAsync(chat, new OpenAIServerOptions { MaxPendingRequests = 1000 }, "http://127.0.0.1:0", LogLevel.None).ConfigureAwait(false);
        await using var host = app;
        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(30) };
        string url = addresses[0] + "/v1/chat/completions";
        await StreamAsync(http, url, tokens, 0).ConfigureAwait(false);              // warm-up

        var result = new JsonObject { ["tokens_per_request"] = tokens };
        double singleRate = 0;
        foreach (int clients in new[] { 1, 4, 16, 64 })
        {
            var clock = Stopwatch.StartNew();
            var runs = await Task.WhenAll(Enumerable.Range(0, clients).Select(i => StreamAsync(http, url, tokens, i))).ConfigureAwait(false);
            double seconds = clock.Elapsed.TotalSeconds;
            double rate = runs.Sum(r => r.Tokens) / seconds;
            if (clients == 1)
            {
                singleRate = rate;
            }

            var latency = runs.Select(r => r.Total).Order().ToArray();
            var first = runs.Select(r => r.FirstToken).Order().ToArray();
            log.WriteLine($"serve: {clients,2} clients: {rate,7:F1} tokens/s aggregate ({rate / singleRate:F1}x one client in sequence); latency p50 {Percentile(latency, 50):F2} s p95 {Percentile(latency, 95):F2} s; first token p50 {Percentile(first, 50):F2} s");
            result[$"clients_{clients}"] = new JsonObject
            {
                ["tokens_per_second"] = Math.Round(rate, 1),
                ["speedup_vs_sequential"] = Math.Round(rate / singleRate, 2),
                ["latency_p50_s"] = Math.Round(Percentile(latency, 50), 3),
                ["latency_p95_s"] = Math.Round(Percentile(latency, 95), 3),
                ["first_token_p50_s"] = Math.Round(Percentile(first, 50), 3),
            };
        }

        return result;
    }

    private static async Task<(int Tokens, double Total, double FirstToken)> StreamAsync(HttpClient http, string url, int tokens, int seed)
    {
        string body = JsonSerializer.Serialize(new
        {
            max_tokens = tokens,
            stream = true,
            stream_options = new { include_usage = true },
            messages = new[] { new { role = "user", content = $"Request {seed}: tell me a story." } },
        });
        var clock = Stopwatch.StartNew();
        double first = -1;
        int generated = 0;
        using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).ConfigureAwait(false);
        response.EnsureSuccessStatusCode();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync().ConfigureAwait(false));
        while (await reader.ReadLineAsync().ConfigureAwait(false) is { } line)
        {
            if (!line.StartsWith("data: {", StringComparison.Ordinal))
            {
                continue;
            }

            var chunk = JsonNode.Parse(line["data: ".Length..])!;
            if (first < 0 && chunk["choices"] is JsonArray { Count: > 0 } choices && choices[0]?["delta"]?["content"] is JsonValue text && text.GetValue<string>().Length > 0)
            {
                first = clock.Elapsed.TotalSeconds;
            }

            if (chunk["usage"]?["completion_tokens"] is JsonValue count)
            {
                generated = count.GetValue<int>();
            }
        }

        return (generated, clock.Elapsed.TotalSeconds, first < 0 ? clock.Elapsed.TotalSeconds : first);
    }

    private static double Percentile(double[] sorted, int p) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p / 100.0 * sorted.Length) - 1)];

    /// <summary>A hub folder with a random text-only Cobra: byte-level tokenizer, Mamba d_model 1024 x 24 layers.</summary>
    private static void WriteRandomModel(string root, ScalarType dtype)
    {
        string Dir(string repo) => Directory.CreateDirectory(Path.Combine(root, repo)).FullName;
        string cobra = Directory.CreateDirectory(Path.Combine(Dir(CobraModelFiles.CobraRepo), "cobra+3b", "checkpoints")).FullName;
        File.WriteAllText(Path.Combine(cobra, "..", "config.json"), """
            {"model": {"model_id": "cobra+3b", "llm_backbone_id": "mamba-2.8b-zephyr", "vision_backbone_id": "dinosiglip-vit-so-384px",
                       "arch_specifier": "no-align+fused-gelu-mlp", "image_resize_strategy": "resize-naive", "llm_max_length": 2048}}
            """);
        string llm = Dir("xiuyul/mamba-2.8b-zephyr");
        File.WriteAllText(Path.Combine(llm, "tokenizer.json"), ByteLevelTokenizer());
        var config = new MambaConfig { DModel = 1024, NLayer = 24, VocabSize = 258 };
        File.WriteAllText(Path.Combine(llm, "config.json"), $$"""{"d_model": {{config.DModel}}, "n_layer": {{config.NLayer}}, "vocab_size": {{config.VocabSize}}, "ssm_cfg": {}, "pad_vocab_size_multiple": 8}""");
        using var model = new MambaForCausalLM(config, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, 11);
        using var scope = torch.NewDisposeScope();
        SafetensorsWriter.Write(Path.Combine(cobra, "latest-checkpoint.safetensors"), model.state_dict().Select(kv => ("llm_backbone.llm." + kv.Key, kv.Value.to(dtype))).ToList());
    }

    /// <summary>A byte-level BPE tokenizer.json with no merges: ids 0-1 special, 2-257 the 256 byte symbols.</summary>
    private static string ByteLevelTokenizer()
    {
        var vocab = new JsonObject { ["<|endoftext|>"] = 0, ["<|padding|>"] = 1 };
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            char symbol = printable ? (char)b : (char)(256 + next++);
            vocab[symbol.ToString()] = 2 + b;
        }

        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 0, ["content"] = "<|endoftext|>", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true },
                new JsonObject { ["id"] = 1, ["content"] = "<|padding|>", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true }),
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject { ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["vocab"] = vocab, ["merges"] = new JsonArray() },
        }.ToJsonString();
    }
}
