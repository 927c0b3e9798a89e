using Microsoft.Extensions.AI;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;
using Xunit;

namespace Cobra.AI.Tests.StateStore;

/// <summary>
/// Two chat clients on the tiny-a model sharing a real Redis, as two replicas behind a load balancer: the second
/// turn on the other replica resumes from the first one's state and answers exactly as a cold run.
/// </summary>
[Collection("redis")]
public sealed class ReplicaTests
{
    private const int ImageTokens = 16;
    private const int Turn1PromptTokens = 20;

    internal static Task<CobraChatClient> Replica(string? store, ILoggerFactory? logs = null, int cacheSize = 16) =>
        CobraChatClient.LoadAsync(new CobraModelOptions
        {
            ModelPath = Golden.TinyAHub,
            Device = "cpu",
            StateStore = store,
            ConversationCacheSize = cacheSize,
            StateStoreTimeout = TimeSpan.FromSeconds(10),                       // generous: a slow shared CI machine must not turn hits into misses
        }, logs);

    internal static ChatMessage SceneMessage() => new(ChatRole.User,
        [new TextContent("What is going on in this image?"), new DataContent(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png")), "image/png")]);

    internal static ChatOptions Sixteen() => new() { MaxOutputTokens = 16 };

    internal static List<ChatMessage> SecondTurn(ChatResponse first, string question = "Is there a red circle? Answer Yes or No.") =>
        [SceneMessage(), new(ChatRole.Assistant, first.Text), new(ChatRole.User, question)];

    /// <summary>Waits until the replica's queued snapshots are written.</summary>
    internal static Task Flush(CobraChatClient replica) => replica.StateStore!.FlushAsync(default).WaitAsync(TimeSpan.FromSeconds(60));

    [Fact]
    public async Task Turn_two_on_the_other_replica_reuses_turn_one_and_answers_exactly_as_a_cold_run()
    {
        await RedisServer.Shared.FlushAsync();
        using var a = await Replica(RedisServer.Shared.Address);
        using var b = await Replica(RedisServer.Shared.Address);
        using var cold = await Replica(null, cacheSize: 0);

        var first = await a.GetResponseAsync([SceneMessage()], Sixteen());
        Assert.Equal(0, first.Usage!.CachedInputTokenCount);
        await Flush(a);

        var history = SecondTurn(first);
        var second = await b.GetResponseAsync(history, Sixteen());
        var expected = await cold.GetResponseAsync(history, Sixteen());
        Assert.Equal(ImageTokens + Turn1PromptTokens, second.Usage!.CachedInputTokenCount);  // image + turn-1 prompt came from Redis
        Assert.Equal(expected.Text, second.Text);
        Assert.Equal(expected.Usage!.InputTokenCount, second.Usage.InputTokenCount);
        Assert.Equal(1, b.StateStore!.Counters.Hits);

        // Turn 3 back on A: it resumes from what B published for turn 2.
        await Flush(b);
        List<ChatMessage> third = [.. history, new(ChatRole.Assistant, second.Text), new(ChatRole.User, "Why?")];
        var thirdOnA = await a.GetResponseAsync(third, Sixteen());
        var thirdCold = await cold.GetResponseAsync(third, Sixteen());
        Assert.Equal(thirdCold.Text, thirdOnA.Text);
        Assert.True(thirdOnA.Usage!.CachedInputTokenCount > second.Usage.CachedInputTokenCount, $"cached {thirdOnA.Usage.CachedInputTokenCount}");
        Assert.Equal(1, a.StateStore!.Counters.Hits);
    }

    [Fact]
    public async Task A_new_conversation_about_the_same_image_on_the_other_replica_skips_the_towers()
    {
        await RedisServer.Shared.FlushAsync();
        using var a = await Replica(RedisServer.Shared.Address);
        using var b = await Replica(RedisServer.Shared.Address);
        using var cold = await Replica(null, cacheSize: 0);
        await a.GetResponseAsync([SceneMessage()], Sixteen());
        await Flush(a);
        ChatMessage other = new(ChatRole.User, [new TextContent("Is there a red circle? Answer Yes or No."), SceneMessage().Contents[1]]);
        var onB = await b.GetResponseAsync([other], Sixteen());
        int userHeader = 4;                                                      // "<|user|>\n"
        Assert.Equal(ImageTokens + userHeader, onB.Usage!.CachedInputTokenCount);
        Assert.Equal((await cold.GetResponseAsync([other], Sixteen())).Text, onB.Text);
    }

    [Fact]
    public async Task Text_only_conversations_resume_across_replicas_too()
    {
        await RedisServer.Shared.FlushAsync();
        using var a = await Replica(RedisServer.Shared.Address);
        using var b = await Replica(RedisServer.Shared.Address);
        using var cold = await Replica(null, cacheSize: 0);
        List<ChatMessage> history = [new(ChatRole.User, "Write a short story about a cobra.")];
        var first = await a.GetResponseAsync(history, Sixteen());
        await Flush(a);
        history.AddRange([new(ChatRole.Assistant, first.Text), new(ChatRole.User, "Shorter.")]);
        var second = await b.GetResponseAsync(history, Sixteen());
        Assert.Equal(28, second.Usage!.CachedInputTokenCount);                 // the 28-token first prompt, no image
        Assert.Equal((await cold.GetResponseAsync(history, Sixteen())).Text, second.Text);
    }

    [Fact]
    public async Task A_replica_without_an_in_process_cache_resumes_its_own_conversations_from_redis()
    {
        await RedisServer.Shared.FlushAsync();
        using var a = await Replica(RedisServer.Shared.Address, cacheSize: 0);
        var first = await a.GetResponseAsync([SceneMessage()], Sixteen());
        await Flush(a);
        var second = await a.GetResponseAsync(SecondTurn(first), Sixteen());
        Assert.Equal(ImageTokens + Turn1PromptTokens, second.Usage!.CachedInputTokenCount);
        Assert.Equal(1, a.StateStore!.Counters.Hits);
    }

    [Fact]
    public async Task A_corrupted_value_or_one_written_by_another_model_is_ignored_and_recomputed()
    {
        var redis = RedisServer.Shared;
        await redis.FlushAsync();
        var logs = new CapturingLoggerFactory();
        using var a = await Replica(redis.Address);
        using var b = await Replica(redis.Address, logs);
        using var cold = await Replica(null, cacheSize: 0);
        var first = await a.GetResponseAsync([SceneMessage()], Sixteen());
        await Flush(a);
        var history = SecondTurn(first);
        var expected = await cold.GetResponseAsync(history, Sixteen());

        // A's snapshots: after the image + user header, and after the whole first prompt. Damage both.
        await using var connection = await redis.ConnectAsync();
        var db = connection.GetDatabase();
        var keys = connection.GetServer(redis.Host, redis.Port).Keys(pattern: "cobra:state:*").ToArray();
        Assert.Equal(2, keys.Length);
        var values = new List<byte[]>();
        foreach (var key in keys)
        {
            byte[] value = (byte[])(await db.HashGetAsync(key, "data"))!;       // RedisCache keeps the value in a hash field
            values.Add(value);
            byte[] corrupt = (byte[])value.Clone();
            corrupt[corrupt.Length / 2] ^= 0x01;                                 // one bit of one state value
            await db.HashSetAsync(key, "data", corrupt);
        }

        var second = await b.GetResponseAsync(history, Sixteen());
        Assert.Equal(0, second.Usage!.CachedInputTokenCount);
        Assert.Equal(expected.Text, second.Text);
        Assert.Equal(2, logs.Count(LogLevel.Warning, "integrity"));

        // Valid snapshots of another model at these keys (a fine-tune with the same shapes, say).
        for (int i = 0; i < keys.Length; i++)
        {
            byte[] foreign = (byte[])values[i].Clone();
            foreign[12] ^= 0xFF;                                                 // the model hash
            System.IO.Hashing.XxHash128.Hash(foreign.AsSpan(0, foreign.Length - 16), foreign.AsSpan(foreign.Length - 16));
            await db.HashSetAsync(keys[i], "data", foreign);
        }

        using var c = await Replica(redis.Address, logs);
        var third = await c.GetResponseAsync(history, Sixteen());
        Assert.Equal(0, third.Usage!.CachedInputTokenCount);
        Assert.Equal(expected.Text, third.Text);
        Assert.Equal(2, logs.Count(LogLevel.Warning, "another model"));
    }

    [Fact]
    public async Task Redis_killed_mid_conversation_still_gives_exact_answers_warns_once_and_is_used_again_when_back()
    {
        using var redis = RedisServer.StartPrivate();
        var logsA = new CapturingLoggerFactory();
        var logsB = new CapturingLoggerFactory();
        using var a = await Replica(redis.Address, logsA);
        using var b = await Replica(redis.Address, logsB);
        using var cold = await Replica(null, cacheSize: 0);

        var first = await a.GetResponseAsync([SceneMessage()], Sixteen());
        await Flush(a);
        redis.Kill();

        // Every turn still succeeds and matches a cold run; B recomputes (its Redis is gone).
        string[] questions = ["Is there a red circle? Answer Yes or No.", "Why?", "Describe it again."];
        foreach (var question in questions)
        {
            var history = SecondTurn(first, question);
            var onB = await b.GetResponseAsync(history, Sixteen());
            Assert.Equal((await cold.GetResponseAsync(history, Sixteen())).Text, onB.Text);
            Assert.True(onB.Usage!.CachedInputTokenCount < ImageTokens + Turn1PromptTokens, $"cached {onB.Usage.CachedInputTokenCount}"); // at most B's own image prefix
        }

        await Flush(b);
        Assert.Equal(1, logsB.Count(LogLevel.Warning, "is unavailable"));       // once for the whole outage
        Assert.True(b.StateStore!.Counters.Failures >= 1);

        // Redis back (empty: no persistence): the same first turn on A is written again and B resumes from it.
        redis.Start();
        bool resumed = false;
        for (int attempt = 0; attempt < 60 && !resumed; attempt++)
        {
            var turn1 = await a.GetResponseAsync([SceneMessage()], Sixteen());
            await Flush(a);
            var history = SecondTurn(turn1, $"Attempt {attempt}: and then?");
            var turn2 = await b.GetResponseAsync(history, Sixteen());
            Assert.Equal((await cold.GetResponseAsync(history, Sixteen())).Text, turn2.Text);
            resumed = turn2.Usage!.CachedInputTokenCount == ImageTokens + Turn1PromptTokens;   // only A's snapshot in Redis gives that
            if (!resumed)
            {
                await Task.Delay(500);                                          // the client reconnects in the background
            }
        }

        Assert.True(resumed, "the replicas never used Redis again after it came back");
        Assert.Equal(1, logsB.Count(LogLevel.Information, "available again"));
        Assert.Equal(1, logsB.Count(LogLevel.Warning, "is unavailable"));
    }

    [Fact]
    public async Task Dependency_injection_names_a_registered_distributed_cache_bound_from_configuration()
    {
        var redis = RedisServer.Shared;
        await redis.FlushAsync();
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:redis"] = redis.Configuration,
            ["Cobra:ModelPath"] = Golden.TinyAHub,
            ["Cobra:Device"] = "cpu",
        }).Build();
        ServiceProvider Container()
        {
            var services = new ServiceCollection();
            services.AddStackExchangeRedisCache(o => o.Configuration = configuration.GetConnectionString("redis"));
            services.AddCobraDistributedStateStore();
            services.AddCobraChatClient(configuration.GetSection("Cobra"));
            return services.BuildServiceProvider();
        }

        using var replicaA = Container();
        using var replicaB = Container();
        var a = replicaA.GetRequiredService<IChatClient>();
        var first = await a.GetResponseAsync([SceneMessage()], Sixteen());
        await Flush(a.GetRequiredService<CobraChatClient>());
        var second = await replicaB.GetRequiredService<IChatClient>().GetResponseAsync(SecondTurn(first), Sixteen());
        Assert.Equal(ImageTokens + Turn1PromptTokens, second.Usage!.CachedInputTokenCount);
        Assert.NotNull(replicaB.GetRequiredService<IDistributedCache>());
    }

    [Fact]
    public async Task Options_bound_from_configuration_carry_the_redis_address()
    {
        var redis = RedisServer.Shared;
        await redis.FlushAsync();
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Cobra:ModelPath"] = Golden.TinyAHub,
            ["Cobra:Device"] = "cpu",
            ["Cobra:StateStore"] = redis.Address,
            ["Cobra:StateStoreTimeToLive"] = "00:10:00",
        }).Build();
        var services = new ServiceCollection();
        services.AddCobraChatClient(configuration.GetSection("Cobra"));
        using var provider = services.BuildServiceProvider();
        var chat = provider.GetRequiredService<IChatClient>();
        await chat.GetResponseAsync([SceneMessage()], Sixteen());               // the model loads on first use
        await Flush(chat.GetRequiredService<CobraChatClient>());
        await using var connection = await redis.ConnectAsync();
        var key = connection.GetServer(redis.Host, redis.Port).Keys(pattern: "cobra:state:*").First();
        var ttl = await connection.GetDatabase().KeyTimeToLiveAsync(key);
        Assert.InRange(ttl!.Value, TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(10));
    }

    [Theory]
    [InlineData("http://127.0.0.1:6379")]
    [InlineData("127.0.0.1:6379")]
    [InlineData("redis://")]
    [InlineData("redis://host:6379/x")]
    [InlineData("redis://host:6379?ssl=true")]
    public void A_state_store_address_that_is_not_redis_is_refused_naming_the_option(string address)
    {
        var e = Assert.Throws<ArgumentException>(() => new ServiceCollection().AddCobraChatClient(o => { o.ModelPath = Golden.TinyAHub; o.StateStore = address; }));
        Assert.Contains("StateStore", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Naming_an_unregistered_distributed_cache_fails_clearly_when_the_client_loads()
    {
        var services = new ServiceCollection();
        services.AddCobraDistributedStateStore("missing");
        services.AddCobraChatClient(o => { o.ModelPath = Golden.TinyAHub; o.Device = "cpu"; });
        using var provider = services.BuildServiceProvider();
        var e = Assert.Throws<InvalidOperationException>(() => provider.GetRequiredService<IChatClient>());
        Assert.Contains("AddCobraDistributedStateStore", e.Message, StringComparison.Ordinal);
    }
}
