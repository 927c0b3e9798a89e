using System.Diagnostics;
using System.Text.Json.Nodes;
using Cobra.AI.Generation.StateStore;
using Cobra.AI.Imaging;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Microsoft.Extensions.Caching.StackExchangeRedis;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using StackExchange.Redis;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra bench --part statestore</c>: the second turn of an image conversation on a replica that did not serve
/// the first, once recomputed (both towers + projector + prefill of 729 image positions and the whole text) and once
/// resumed from Redis (fetch + check + decode of the snapshot another replica published, then prefill of the new
/// tokens only), on the full-size model with random weights (<c>--layers N</c> shrinks the LLM). Needs a Redis at
/// <c>--state-store</c>.
/// </summary>
internal static class StateStoreBench
{
    private const int ImageSize = RandomCobraModel.ImageSize;
    private const int EndOfText = 0;
    private static readonly int[] AssistantHeader = [EndOfText, 187, 29, 93, 515, 5567, 49651, 187];

    public static JsonObject Run(MambaConfig llmConfig, Precision precision, string address, int questionTokens, bool skipVision, TextWriter log)
    {
        var dtype = precision.ToScalarType();
        string name = precision == Precision.Float32 ? "fp32" : "bf16";
        using var model = RandomCobraModel.Build(llmConfig, dtype, withVision: !skipVision);
        var llm = model.LanguageModel;
        var photo = RandomCobraModel.RandomPhoto(640, 480);
        int imageTokens = model.Vision?.PatchTokens ?? 0;

        // Turn 1 = question + header; its answer; turn 2 = turn 1 + answer + end-of-text + new question + header.
        var random = new Random(13);
        int[] Words(int n) => Enumerable.Range(0, n).Select(_ => random.Next(2, 50_000)).ToArray();
        int[] turn1 = [.. Words(questionTokens), .. AssistantHeader];
        int[] answer = Words(32);
        int[] turn2 = [.. turn1, .. answer, .. AssistantHeader[..1], .. Words(4), .. Words(questionTokens), .. AssistantHeader];
        int published = turn1.Length + answer.Length;                            // the state before the answer's end-of-text

        var identity = ModelFingerprint.Identity(System.Security.Cryptography.SHA256.HashData("cobra bench statestore"u8), llmConfig, dtype);
        ScalarType stateType;
        using (var probe = llm.NewState())
        {
            stateType = probe.Layers[0].Ssm.dtype;                               // the engine keeps states in fp32
        }

        var codec = new StateSnapshotCodec(identity, llmConfig, stateType, llm.Device, imageTokens);
        var settings = new StateStoreSettings(TimeSpan.FromMinutes(5), 1L << 30, TimeSpan.FromSeconds(30));
        var boundaries = new PromptBoundaries(EndOfText, AssistantHeader);
        RedisCache Redis()
        {
            var redis = new RedisCache(Options.Create(new RedisCacheOptions { ConfigurationOptions = StateStoreFactory.ToRedisConfiguration(address, settings.Timeout) }));
            try
            {
                redis.GetAsync("cobra:bench:connect").GetAwaiter().GetResult();          // connect outside the timings
            }
            catch (RedisConnectionException e)
            {
                redis.Dispose();
                throw new UsageException($"--part statestore: no Redis at {address} ({e.Message}); start one: redis-server --port 6379 --save '' --appendonly no.");
            }

            return redis;
        }

        using var noGrad = torch.no_grad();
        Prefill(model, skipVision ? null : photo, turn1[..8]).Dispose();        // warm-up

        // Replica A: turn 1 and its answer, then publish (encode on this thread = the inference thread, write in the background).
        using var stateA = Prefill(model, skipVision ? null : photo, turn2[..published]);
        using var storeA = new DistributedStateStore(Redis(), codec, boundaries, settings, NullLogger.Instance, address);
        var clock = Stopwatch.StartNew();
        storeA.Publish(skipVision ? null : "bench-image", turn2[..published], stateA);
        double encodeMs = clock.Elapsed.TotalMilliseconds;
        storeA.FlushAsync(CancellationToken.None).GetAwaiter().GetResult();
        double writeMs = clock.Elapsed.TotalMilliseconds - encodeMs;
        if (storeA.Counters.Written != 1)
        {
            throw new UsageException($"--part statestore: could not write to Redis at {address} (start one: redis-server --port 6379 --save '' --appendonly no).");
        }

        // Cold: replica B without the store recomputes everything.
        Tensor coldLogits = null!;
        double coldS = BenchCommand.Time(() =>
        {
            using var state = Prefill(model, skipVision ? null : photo, turn2, logits => coldLogits = logits);
        });
        log.WriteLine($"[{name}] recompute turn 2 ({imageTokens} image + {turn2.Length} text positions): {coldS:F2} s");

        // Resumed: replica B (its own connection, nothing local) fetches, checks and decodes, then prefills the rest.
        using var storeB = new DistributedStateStore(Redis(), codec, boundaries, settings, NullLogger.Instance, address);
        double lookupMs = 0, decodeMs = 0;
        long bytes = 0;
        Tensor warmLogits = null!;
        double resumeS = BenchCommand.Time(() =>
        {
            var c = Stopwatch.StartNew();
            var remote = storeB.FindLongestAsync(skipVision ? null : "bench-image", turn2, CancellationToken.None).GetAwaiter().GetResult()
                ?? throw new InvalidOperationException("The published snapshot was not found in the store.");
            lookupMs = c.Elapsed.TotalMilliseconds;
            bytes = remote.Value.Length;
            using var state = storeB.Decode(remote, skipVision ? null : "bench-image", turn2) ?? throw new InvalidOperationException("The snapshot did not decode.");
            decodeMs = c.Elapsed.TotalMilliseconds - lookupMs;
            using var scope = torch.NewDisposeScope();
            var ids = torch.tensor(turn2[remote.PrefixLength..].Select(i => (long)i).ToArray()).unsqueeze(0);
            warmLogits = llm.Forward(model.InputEmbeddings(null, ids), state).MoveToOuterDisposeScope();
        });
        double diff = coldLogits.to(ScalarType.Float32).sub(warmLogits.to(ScalarType.Float32)).abs().max().item<float>();
        coldLogits.Dispose();
        warmLogits.Dispose();
        log.WriteLine($"[{name}] resume from Redis: {resumeS:F2} s (lookup {lookupMs:F0} ms, decode {decodeMs:F0} ms, {bytes / 1e6:F1} MB); "
            + $"publish: encode {encodeMs:F0} ms on the inference thread, write {writeMs:F0} ms in the background; {coldS / resumeS:F1}x faster; max |logit diff| {diff:G3}");
        return new JsonObject
        {
            ["layers"] = llmConfig.NLayer,
            ["vision"] = !skipVision,
            ["recompute_s"] = Math.Round(coldS, 3),
            ["resume_s"] = Math.Round(resumeS, 3),
            ["speedup"] = Math.Round(coldS / resumeS, 1),
            ["lookup_ms"] = Math.Round(lookupMs, 1),
            ["decode_ms"] = Math.Round(decodeMs, 1),
            ["publish_encode_ms"] = Math.Round(encodeMs, 1),
            ["publish_write_ms"] = Math.Round(writeMs, 1),
            ["snapshot_bytes"] = bytes,
            ["bytes_moved"] = storeA.Counters.BytesWritten + storeB.Counters.BytesRead,
            ["resumed_text_tokens"] = turn2.Length - published,
            ["max_abs_logit_diff"] = diff,
        };
    }

    /// <summary>Image (when given) + text from a zero state; the last position's logits go to <paramref name="logits"/>.</summary>
    private static MambaState Prefill(CobraModel model, RgbImage? photo, int[] text, Action<Tensor>? logits = null)
    {
        using var scope = torch.NewDisposeScope();
        Tensor? image = null;
        if (photo is not null)
        {
            var resized = CobraImageTransform.Resize(photo, ImageSize, ResizeStrategy.ResizeNaive, TowerNormalization.Dino);
            image = model.EncodeImage(CobraImageTransform.ToTensor(resized, TowerNormalization.Dino), CobraImageTransform.ToTensor(resized, TowerNormalization.SigLip));
        }

        var ids = torch.tensor(text.Select(i => (long)i).ToArray()).unsqueeze(0);
        var state = model.LanguageModel.NewState();
        var last = model.LanguageModel.Forward(model.InputEmbeddings(image, ids), state);
        logits?.Invoke(last.MoveToOuterDisposeScope());
        return state;
    }
}
