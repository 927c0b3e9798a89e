using System.Collections.Concurrent;
using Cobra.AI.Generation.StateStore;
using Cobra.AI.Modeling.Mamba;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Caching.StackExchangeRedis;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.StateStore;

/// <summary>The store's behaviour around its cache: lookups, the write queue, outages, timeouts, concurrent writers.</summary>
[Collection("redis")]
public sealed class DistributedStateStoreTests
{
    // A two-turn Zephyr-shaped prompt for the boundaries below: header [0, 7, 8] ends turn 1 at 5; the answer's end-of-text is at 8.
    private static readonly int[] Turn2 = [3, 4, 0, 7, 8, 5, 6, 9, 0, 2, 3, 0, 7, 8];
    private static readonly PromptBoundaries Boundaries = new(0, [0, 7, 8]);
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private static StateStoreSettings Settings(TimeSpan? timeout = null, int queue = 4) =>
        new(TimeSpan.FromMinutes(5), 1 << 26, timeout ?? TimeSpan.FromSeconds(10), WriteQueue: queue, RetryInterval: TimeSpan.Zero);

    private static DistributedStateStore Store(IDistributedCache cache, ILoggerFactory? logs = null, StateStoreSettings? settings = null, string model = "model-a") =>
        new(cache, StateSnapshotCodecTests.Codec(ScalarType.Float32, model, imageTokens: 0), Boundaries, settings ?? Settings(), (logs ?? new CapturingLoggerFactory()).CreateLogger("store"), "test");

    [Fact]
    public async Task A_snapshot_published_by_one_store_is_found_by_another_at_the_longest_boundary()
    {
        var cache = new FakeCache();
        using var writer = Store(cache);
        using var reader = Store(cache);
        using var early = StateSnapshotCodecTests.RandomState(ScalarType.Float32, 5, seed: 1);
        using var late = StateSnapshotCodecTests.RandomState(ScalarType.Float32, 8, seed: 2);
        writer.Publish(null, Turn2[..5], early);
        writer.Publish(null, Turn2[..8], late);
        await writer.FlushAsync(default).WaitAsync(Wait);
        Assert.Equal(2, writer.Counters.Written);

        var found = await reader.FindLongestAsync(null, Turn2, default);
        Assert.Equal(8, found!.PrefixLength);
        using var decoded = reader.Decode(found, null, Turn2);
        StateSnapshotCodecTests.AssertBitEqual(late, decoded!);

        // The writer itself leaves the lookup to its in-process cache, which holds what it wrote.
        Assert.Null(await writer.FindLongestAsync(null, Turn2, default));
        Assert.Equal(1, cache.Gets);
    }

    [Fact]
    public async Task A_snapshot_lost_by_the_store_is_written_again_when_the_same_prefix_is_stored_again()
    {
        var cache = new FakeCache();
        using var writer = Store(cache);
        using var reader = Store(cache);
        using var state = StateStoreTestsState(5);
        writer.Publish(null, Turn2[..5], state);
        await writer.FlushAsync(default).WaitAsync(Wait);
        cache.Clear();                                                            // a Redis restart without persistence
        writer.Publish(null, Turn2[..5], state);
        await writer.FlushAsync(default).WaitAsync(Wait);
        Assert.Equal(2, writer.Counters.Written);
        Assert.NotNull(await reader.FindLongestAsync(null, Turn2, default));
    }

    [Fact]
    public async Task A_down_store_costs_one_warning_per_outage_and_is_used_again_when_it_returns()
    {
        var cache = new FakeCache();
        var logs = new CapturingLoggerFactory();
        using var writer = Store(cache);
        using var reader = Store(cache, logs);
        using var state = StateStoreTestsState(5);
        writer.Publish(null, Turn2[..5], state);
        await writer.FlushAsync(default).WaitAsync(Wait);

        cache.Mode = FakeMode.Fail;
        for (int i = 0; i < 5; i++)
        {
            Assert.Null(await reader.FindLongestAsync(null, Turn2, default).WaitAsync(Wait));
            reader.Publish(null, [1, 2, i], state);                              // writes fail too (other prefixes: see the first test)
        }

        await reader.FlushAsync(default).WaitAsync(Wait);
        Assert.True(reader.Unavailable);
        Assert.Equal(1, logs.Count(LogLevel.Warning, "is unavailable"));

        cache.Mode = FakeMode.Normal;
        Assert.NotNull(await reader.FindLongestAsync(null, Turn2, default));
        Assert.False(reader.Unavailable);
        Assert.Equal(1, logs.Count(LogLevel.Information, "available again"));

        cache.Mode = FakeMode.Fail;                                               // a second outage warns again, once
        Assert.Null(await reader.FindLongestAsync(null, Turn2, default));
        Assert.Null(await reader.FindLongestAsync(null, Turn2, default));
        Assert.Equal(2, logs.Count(LogLevel.Warning, "is unavailable"));
    }

    [Fact]
    public async Task A_hanging_store_is_cut_off_by_the_timeout_for_lookups_and_writes()
    {
        var cache = new FakeCache { Mode = FakeMode.Hang };
        var logs = new CapturingLoggerFactory();
        using var store = Store(cache, logs, Settings(TimeSpan.FromMilliseconds(200)));
        Assert.Null(await store.FindLongestAsync(null, Turn2, default).WaitAsync(Wait));
        Assert.True(store.Unavailable);
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("TimeoutException", StringComparison.Ordinal));

        using var state = StateStoreTestsState(5);
        store.Publish(null, Turn2[..5], state);                                 // retry interval 0: this write is the probe
        await store.FlushAsync(default).WaitAsync(Wait);
        Assert.Equal(0, store.Counters.Written);
        Assert.True(store.Counters.Failures >= 2);

        // A request whose own token fires is cancelled, not reported as a store failure.
        cache.Mode = FakeMode.Hang;
        using var cancelled = new CancellationTokenSource(TimeSpan.FromMilliseconds(20));
        using var patient = Store(cache, logs, Settings(TimeSpan.FromSeconds(30)));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => patient.FindLongestAsync(null, Turn2, cancelled.Token).WaitAsync(Wait));
        Assert.False(patient.Unavailable);
    }

    [Fact]
    public void Writes_beyond_the_queue_are_dropped_not_waited_for()
    {
        var cache = new FakeCache { Mode = FakeMode.Hang };
        using var store = Store(cache, settings: Settings(TimeSpan.FromSeconds(2), queue: 2));
        for (int i = 1; i <= 8; i++)
        {
            using var state = StateStoreTestsState(i);
            store.Publish(null, [.. Turn2[..5], i], state);                     // distinct keys; the writer hangs on the first
        }

        Assert.InRange(store.Counters.Dropped, 8 - 3, 8 - 2);
    }

    [Fact]
    public async Task Values_over_the_size_cap_or_of_another_model_are_ignored()
    {
        var cache = new FakeCache();
        var logs = new CapturingLoggerFactory();
        using var state = StateStoreTestsState(5);
        using (var other = Store(cache, model: "model-b"))
        {
            other.Publish(null, Turn2[..5], state);
            await other.FlushAsync(default);
        }

        // Put model B's value where model A looks (as if keys collided): refused by its content.
        var keyB = Assert.Single(cache.Keys);
        string keyA = StateStoreKeys.For(StateSnapshotCodecTests.Codec(ScalarType.Float32, "model-a", imageTokens: 0).ModelHash, null, Turn2, 5);
        await cache.SetAsync(keyA, (await cache.GetAsync(keyB))!, new DistributedCacheEntryOptions());
        using var reader = Store(cache, logs);
        Assert.Null(await reader.FindLongestAsync(null, Turn2, default));
        Assert.Equal(1, reader.Counters.Rejected);
        Assert.Equal(1, logs.Count(LogLevel.Warning, "another model"));

        using var tiny = Store(cache, settings: Settings() with { MaxSnapshotBytes = 1000 });
        tiny.Publish(null, Turn2[..8], state);
        Assert.Equal(1, tiny.Counters.Dropped);
    }

    [Fact]
    public async Task Concurrent_writers_of_one_key_on_real_redis_leave_one_whole_valid_value()
    {
        var redis = RedisServer.Shared;
        await redis.FlushAsync();
        var states = Enumerable.Range(1, 6).Select(seed => StateSnapshotCodecTests.RandomState(ScalarType.Float32, 5, seed)).ToArray();
        try
        {
            for (int round = 0; round < 5; round++)
            {
                var stores = states.Select(_ => Store(Redis(redis))).ToArray();
                using var go = new ManualResetEventSlim();
                var writers = stores.Select((store, i) => Task.Run(() =>
                {
                    go.Wait();
                    store.Publish(null, Turn2[..5], states[i]);
                })).ToArray();
                go.Set();
                await Task.WhenAll(writers).WaitAsync(Wait);
                await Task.WhenAll(stores.Select(s => s.FlushAsync(default))).WaitAsync(Wait);
                Assert.All(stores, s => Assert.Equal(1, s.Counters.Written));

                using var reader = Store(Redis(redis));
                var found = await reader.FindLongestAsync(null, Turn2, default);
                Assert.Equal(5, found!.PrefixLength);
                using var decoded = reader.Decode(found, null, Turn2);
                var winner = Assert.Single(states, s => s.Layers[0].Ssm.bytes.SequenceEqual(decoded!.Layers[0].Ssm.bytes));
                StateSnapshotCodecTests.AssertBitEqual(winner, decoded!);
                foreach (var store in stores)
                {
                    store.Dispose();
                }
            }
        }
        finally
        {
            foreach (var state in states)
            {
                state.Dispose();
            }
        }
    }

    private static RedisCache Redis(RedisServer redis) => new(Options.Create(new RedisCacheOptions { Configuration = redis.Configuration }));

    private static MambaState StateStoreTestsState(int positions) => StateSnapshotCodecTests.RandomState(ScalarType.Float32, positions);

    private enum FakeMode
    {
        Normal,
        Fail,
        Hang,
    }

    /// <summary>An in-memory <see cref="IDistributedCache"/> that can fail or hang on demand.</summary>
    private sealed class FakeCache : IDistributedCache
    {
        private readonly ConcurrentDictionary<string, byte[]> values = new();
        private int gets;

        public FakeMode Mode { get; set; }

        public int Gets => gets;

        public IReadOnlyList<string> Keys => [.. values.Keys];

        public void Clear() => values.Clear();

        public byte[]? Get(string key) => throw new NotSupportedException("the store must use the async API");

        public async Task<byte[]?> GetAsync(string key, CancellationToken token = default)
        {
            await Behave(token);
            Interlocked.Increment(ref gets);
            return values.TryGetValue(key, out var v) ? v : null;
        }

        public void Set(string key, byte[] value, DistributedCacheEntryOptions options) => throw new NotSupportedException("the store must use the async API");

        public async Task SetAsync(string key, byte[] value, DistributedCacheEntryOptions options, CancellationToken token = default)
        {
            await Behave(token);
            values[key] = value;
        }

        public void Refresh(string key) => throw new NotSupportedException();

        public Task RefreshAsync(string key, CancellationToken token = default) => throw new NotSupportedException();

        public void Remove(string key) => throw new NotSupportedException();

        public Task RemoveAsync(string key, CancellationToken token = default) => throw new NotSupportedException();

        private async Task Behave(CancellationToken token)
        {
            switch (Mode)
            {
                case FakeMode.Fail:
                    throw new InvalidOperationException("store down");
                case FakeMode.Hang:
                    await Task.Delay(TimeSpan.FromMinutes(2), CancellationToken.None);   // ignores the token, like a stuck socket
                    break;
            }

            token.ThrowIfCancellationRequested();
        }
    }
}
