using Cobra.AI.Generation.Constrained;
using Cobra.AI.Generation;
using Xunit;
using static Cobra.AI.Tests.Generation.EngineTestKit;

namespace Cobra.AI.Tests.Generation;

/// <summary>The engine's scheduler: admission order, the queue bound, cancellation and failure isolation, forks, snapshots.</summary>
public sealed class EngineSchedulerTests : IDisposable
{
    private static readonly int[] Prompt = [12, 40, 7, 99, 3, 250, 18];
    private readonly InferenceEngine solo = Engine(new EngineSettings { CacheEntries = 0 });

    public void Dispose() => solo.Dispose();

    private static int[] LongPrompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(1, 500)).ToArray();
    }

    [Fact]
    public async Task Requests_are_admitted_first_in_first_out()
    {
        using var engine = Engine(new EngineSettings { MaxActive = 1 });
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => RunAsync(engine, Greedy(LongPrompt(20, i), 3))).ToArray());
        long first = outcomes[0].Done.Admission;
        Assert.Equal([first, first + 1, first + 2, first + 3], outcomes.Select(o => o.Done.Admission));
    }

    [Fact]
    public async Task Past_the_queue_limit_a_request_is_refused_with_a_clear_exception_and_the_rest_are_served()
    {
        using var engine = Engine(new EngineSettings { MaxActive = 1, MaxQueued = 1, PrefillChunkTokens = 1 });
        var first = RunAsync(engine, Greedy(LongPrompt(80, 1), 2));
        var second = RunAsync(engine, Greedy(Prompt, 2));
        var e = Assert.Throws<CobraQueueFullException>(() => engine.Submit(Greedy(Prompt, 2), CancellationToken.None));
        Assert.Equal(1, e.Limit);
        Assert.Contains("MaxQueuedRequests", e.Message, StringComparison.Ordinal);
        await Task.WhenAll(first, second);
        await RunAsync(engine, Greedy(Prompt, 2));                                // room again
    }

    [Fact]
    public async Task A_queued_request_cancelled_is_freed_at_once()
    {
        using var engine = Engine(new EngineSettings { MaxActive = 1, PrefillChunkTokens = 1 });
        var busy = RunAsync(engine, Greedy(LongPrompt(150, 2), 2));
        using var cancel = new CancellationTokenSource();
        var queued = RunAsync(engine, Greedy(Prompt, 4), cancel.Token);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued);
        Assert.False(busy.IsCompleted, "the queued request waited for the running one to finish instead of being freed");
        await busy;
    }

    [Fact]
    public async Task Cancellation_at_any_phase_frees_the_request_and_leaves_batch_mates_unchanged()
    {
        var reference = await RunAsync(solo, Greedy(Prompt, 10));
        var image = Image("scene_100x70.png");
        using var engine = Engine(new EngineSettings { MaxActive = 4, PrefillChunkTokens = 3 });
        for (int delay = 0; delay < 60; delay += 6)
        {
            using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(delay));
            var victim = RunAsync(engine, Greedy(LongPrompt(60, delay), 30, image, $"img{delay}"), cancel.Token);
            var mate = RunAsync(engine, Greedy(Prompt, 10));
            try
            {
                await victim;
            }
            catch (OperationCanceledException)
            {
                // cancelled in the queue, in the towers, in the prefill or while decoding
            }

            Assert.Equal(reference.Choice.OutputIds, (await mate).Choice.OutputIds);
        }

        await WaitIdleAsync(engine);
    }

    [Fact]
    public async Task A_failing_request_fails_alone()
    {
        var reference = await RunAsync(solo, Greedy(Prompt, 8));
        using var engine = Engine(new EngineSettings { MaxActive = 4 });
        var mate = RunAsync(engine, Greedy(Prompt, 8));
        var failing = RunAsync(engine, Greedy(LongPrompt(9, 3), 8) with { Constraint = () => new Throwing() });
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => failing);
        Assert.Equal(Throwing.Message, e.Message);
        Assert.Equal(reference.Choice.OutputIds, (await mate).Choice.OutputIds);
        Assert.Equal(reference.Choice.OutputIds, (await RunAsync(engine, Greedy(Prompt, 8))).Choice.OutputIds);
    }

    [Fact]
    public async Task Forks_share_one_prefill_and_each_choice_is_reproducible_by_its_seed()
    {
        var sampling = new SamplingOptions { Temperature = 1.5, Seed = 11, MaxNewTokens = 12 };
        var request = new GenerationRequest(Prompt, null, null, sampling, []);
        var forked = await RunAsync(solo, request with { Choices = 3 });
        Assert.Equal(3, forked.Choices.Count);
        Assert.Equal([0, 1, 2], forked.Choices.Select(c => c.Choice));
        Assert.Equal(Prompt.Length, forked.Done.InputTokens);
        Assert.Equal(forked.Choices.Sum(c => c.OutputIds.Count), forked.Done.OutputTokens);

        // Choice i draws with seed + i: choice 0 equals a lone request with the seed, choice 1 one with seed + 1.
        Assert.Equal((await RunAsync(solo, request)).Choice.OutputIds, forked.Choices[0].OutputIds);
        Assert.Equal((await RunAsync(solo, request with { Sampling = sampling with { Seed = 12 } })).Choice.OutputIds, forked.Choices[1].OutputIds);
        Assert.NotEqual(forked.Choices[0].OutputIds, forked.Choices[2].OutputIds);
        Assert.Equal(forked.Choices.Select(c => c.OutputIds), (await RunAsync(solo, request with { Choices = 3 })).Choices.Select(c => c.OutputIds));

        var greedy = await RunAsync(solo, Greedy(Prompt, 6) with { Choices = 2 });
        Assert.Equal(greedy.Choices[0].OutputIds, greedy.Choices[1].OutputIds);
        Assert.Equal(greedy.TextOf(0), greedy.TextOf(1));
    }

    [Fact]
    public async Task A_new_conversation_about_a_seen_image_skips_the_towers_and_answers_as_a_cold_run()
    {
        var image = Image("scene_100x70.png");
        using var tokenizerEngine = Engine(new EngineSettings { CacheEntries = 0 });
        var first = tokenizerEngine.Pipeline.EncodePrompt([("user", "What is going on in this image?")]);
        var second = tokenizerEngine.Pipeline.EncodePrompt([("user", "Is there a red circle?")]);

        using var engine = Engine(new EngineSettings { CacheEntries = 8 });
        await RunAsync(engine, Greedy(first, 4, image, "scene"));
        var warm = await RunAsync(engine, Greedy(second, 8, image, "scene"));
        var cold = await RunAsync(tokenizerEngine, Greedy(second, 8, image, "scene"));
        Assert.Equal(cold.Choice.OutputIds, warm.Choice.OutputIds);
        int imageTokens = engine.Pipeline.ImageTokenCount;
        Assert.True(warm.Done.CachedInputTokens > imageTokens, $"cached {warm.Done.CachedInputTokens} <= {imageTokens} image tokens");
        Assert.Equal(cold.Done.InputTokens, warm.Done.InputTokens);
        Assert.Equal(0, cold.Done.CachedInputTokens);

        // Another image never reuses it.
        var other = await RunAsync(engine, Greedy(second, 8, Image("badge_64x64_rgba.png"), "badge"));
        Assert.Equal(0, other.Done.CachedInputTokens);
        Assert.True(engine.Statistics.StateCacheHits >= 1);
        Assert.True(engine.Statistics.StateCacheMisses >= 2);
    }

    [Fact]
    public async Task Mixed_turns_keep_live_tensors_and_cache_bytes_bounded()
    {
        const long cacheBytes = 3L * 1024 * 1024;
        using var engine = Engine(new EngineSettings { MaxActive = 3, CacheEntries = 64, CacheBytes = cacheBytes });
        var image = Image("badge_64x64_rgba.png");
        async Task Batch(int round) => await Task.WhenAll(Enumerable.Range(0, 3).Select(k =>
            RunAsync(engine, Greedy(LongPrompt(5 + ((round + k) % 9), round * 3 + k), 1 + (k % 3), k == 0 ? image : null, $"i{round % 5}") with { Choices = 1 + (round % 2) })));
        for (int i = 0; i < 10; i++)
        {
            await Batch(i);
        }

        await WaitIdleAsync(engine);
        long before = engine.LiveTensorCount;
        for (int i = 10; i < 110; i++)
        {
            await Batch(i);
            Assert.True(engine.Statistics.StateCacheBytes <= cacheBytes, $"cache holds {engine.Statistics.StateCacheBytes} bytes > {cacheBytes}");
        }

        await WaitIdleAsync(engine);
        long perSnapshot = 2L * engine.Pipeline.Model.LanguageModel.Config.NLayer;
        int maxSnapshots = (int)(cacheBytes / engine.Statistics.StateCacheBytes * Math.Max(1, engine.Statistics.StateCacheEntries)) + 1;
        Assert.InRange(engine.LiveTensorCount - before, -maxSnapshots * perSnapshot, maxSnapshots * perSnapshot);
    }

    [Fact]
    public async Task Decode_steps_their_rows_and_busy_time_are_counted_and_idle_time_is_not()
    {
        using var engine = Engine(new EngineSettings { CacheEntries = 0 });
        var before = engine.Statistics;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var outcome = await RunAsync(engine, Greedy(Prompt, 6) with { Choices = 2 });
        var wall = clock.Elapsed;
        await WaitIdleAsync(engine);
        var after = engine.Statistics;
        long steps = after.DecodeSteps - before.DecodeSteps;
        Assert.Equal(outcome.Choices.Max(c => c.OutputIds.Count) - 1, steps);     // the first token comes from the prefill's logits
        Assert.Equal(2 * steps, after.DecodeStepRows - before.DecodeStepRows);    // both choices decode in every step
        var busy = after.BusyTime - before.BusyTime;
        Assert.True(busy > TimeSpan.Zero && busy <= wall + TimeSpan.FromMilliseconds(50), $"busy {busy} over {wall} of wall time");

        await Task.Delay(300);
        var idle = engine.Statistics.BusyTime - after.BusyTime;
        Assert.True(idle < TimeSpan.FromMilliseconds(50), $"{idle} of 300 ms idle counted as busy");
    }

    private static async Task WaitIdleAsync(InferenceEngine engine)
    {
        for (int i = 0; i < 200 && engine.ActiveCount > 0; i++)
        {
            await Task.Delay(10);
        }

        Assert.Equal(0, engine.ActiveCount);
    }

    private sealed class Throwing : ITokenConstraint
    {
        public const string Message = "constraint failed on purpose";

        public bool IsComplete => false;

        public void FillAllowed(Span<bool> allowed) => throw new InvalidOperationException(Message);

        public void Accept(int tokenId)
        {
        }
    }
}
