using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Cobra.AI.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.LoadBalancing;

namespace Cobra.AI.Tests.StateStore;

/// <summary>
/// The OpenAI-compatible server scaled out: replicas sharing Redis, reached through a YARP round-robin proxy or
/// directly as <c>cobra serve --state-store</c> processes; cached tokens reported, answers exact, Redis may die.
/// </summary>
[Collection("redis")]
public sealed class ScaleOutTests : IDisposable
{
    private readonly HttpClient http = new() { Timeout = TimeSpan.FromMinutes(2) };

    public void Dispose() => http.Dispose();

    private static string ImageUrl() => "data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png")));

    private static string Turn1() => JsonSerializer.Serialize(new
    {
        model = "cobra+3b",
        max_tokens = 16,
        messages = new object[]
        {
            new { role = "user", content = new object[] { new { type = "text", text = "What is going on in this image?" }, new { type = "image_url", image_url = new { url = ImageUrl() } } } },
        },
    });

    private static string Turn2(string answer, string question = "Is there a red circle? Answer Yes or No.") => JsonSerializer.Serialize(new
    {
        model = "cobra+3b",
        max_tokens = 16,
        messages = new object[]
        {
            new { role = "user", content = new object[] { new { type = "text", text = "What is going on in this image?" }, new { type = "image_url", image_url = new { url = ImageUrl() } } } },
            new { role = "assistant", content = answer },
            new { role = "user", content = question },
        },
    });

    private async Task<(string Content, int Prompt, int Cached)> Chat(string baseUrl, string json)
    {
        using var response = await http.PostAsync(baseUrl + "/v1/chat/completions", new StringContent(json, Encoding.UTF8, "application/json"));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {text}");
        using var doc = JsonDocument.Parse(text);
        var usage = doc.RootElement.GetProperty("usage");
        return (doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!,
            usage.GetProperty("prompt_tokens").GetInt32(),
            usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
    }

    [Fact]
    public async Task Two_server_replicas_behind_a_yarp_round_robin_proxy_share_conversation_state()
    {
        await RedisServer.Shared.FlushAsync();
        using var clientA = await ReplicaTests.Replica(RedisServer.Shared.Address);
        using var clientB = await ReplicaTests.Replica(RedisServer.Shared.Address);
        using var cold = await ReplicaTests.Replica(null, cacheSize: 0);
        var countingA = new CountingChatClient(clientA);
        var countingB = new CountingChatClient(clientB);
        var (hostA, addressesA) = await OpenAIServerHost.StartAsync(countingA, new OpenAIServerOptions(), "http://127.0.0.1:0", LogLevel.None);
        await using var _a = hostA;
        var (hostB, addressesB) = await OpenAIServerHost.StartAsync(countingB, new OpenAIServerOptions(), "http://127.0.0.1:0", LogLevel.None);
        await using var _b = hostB;
        var (proxy, proxyUrl) = await StartProxyAsync(addressesA[0], addressesB[0]);
        await using var _p = proxy;
        var (coldHost, coldAddresses) = await OpenAIServerHost.StartAsync(cold, new OpenAIServerOptions(), "http://127.0.0.1:0", LogLevel.None);
        await using var _c = coldHost;

        var first = await Chat(proxyUrl, Turn1());
        Assert.Equal(0, first.Cached);
        await ReplicaTests.Flush(countingA.Calls == 1 ? clientA : clientB);
        var second = await Chat(proxyUrl, Turn2(first.Content));
        Assert.Equal(1, countingA.Calls);                                       // round robin: one turn on each replica
        Assert.Equal(1, countingB.Calls);
        var expected = await Chat(coldAddresses[0], Turn2(first.Content));
        Assert.Equal(expected.Content, second.Content);
        Assert.Equal(expected.Prompt, second.Prompt);
        Assert.Equal(16 + 20, second.Cached);
        Assert.Equal(0, expected.Cached);
    }

    [Fact]
    public async Task Two_cobra_serve_state_store_replicas_resume_each_other_and_survive_redis_stopping()
    {
        using var redis = RedisServer.StartPrivate();
        using var stop = new CancellationTokenSource();
        string replicaA = $"http://127.0.0.1:{FreePort()}";
        string replicaB = $"http://127.0.0.1:{FreePort()}";
        string coldUrl = $"http://127.0.0.1:{FreePort()}";
        var serving = new[]
        {
            CliRunner.RunAsync(stop.Token, "serve", "--model-dir", Golden.TinyAHub, "--device", "cpu", "--urls", replicaA, "--state-store", redis.Address),
            CliRunner.RunAsync(stop.Token, "serve", "--model-dir", Golden.TinyAHub, "--device", "cpu", "--urls", replicaB, "--state-store", redis.Address),
            CliRunner.RunAsync(stop.Token, "serve", "--model-dir", Golden.TinyAHub, "--device", "cpu", "--urls", coldUrl),
        };
        try
        {
            foreach (var url in new[] { replicaA, replicaB, coldUrl })
            {
                await WaitReadyAsync(url, serving);
            }

            var first = await Chat(replicaA, Turn1());
            await WaitForKeysAsync(redis);
            var second = await Chat(replicaB, Turn2(first.Content));
            var expected = await Chat(coldUrl, Turn2(first.Content));
            Assert.Equal(16 + 20, second.Cached);
            Assert.Equal(expected.Content, second.Content);

            redis.Kill();
            foreach (var question in new[] { "Why?", "What colour is it?" })
            {
                var onB = await Chat(replicaB, Turn2(first.Content, question));
                var onA = await Chat(replicaA, Turn2(first.Content, question));
                var coldAnswer = await Chat(coldUrl, Turn2(first.Content, question));
                Assert.Equal(coldAnswer.Content, onB.Content);
                Assert.Equal(coldAnswer.Content, onA.Content);
                Assert.True(onB.Cached < 16 + 20, $"cached {onB.Cached}");       // B's own image prefix at most
            }
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(serving).WaitAsync(TimeSpan.FromSeconds(60));
        }
    }

    internal static async Task<(WebApplication Proxy, string Url)> StartProxyAsync(params string[] replicas)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.None);
        builder.Services.AddReverseProxy().LoadFromMemory(
            [new RouteConfig { RouteId = "all", ClusterId = "replicas", Match = new RouteMatch { Path = "{**catch-all}" } }],
            [new ClusterConfig
            {
                ClusterId = "replicas",
                LoadBalancingPolicy = LoadBalancingPolicies.RoundRobin,
                Destinations = replicas.Select((url, i) => (url, i)).ToDictionary(r => $"replica{r.i}", r => new DestinationConfig { Address = r.url }),
            }]);
        var app = builder.Build();
        app.MapReverseProxy();
        await app.StartAsync();
        return (app, app.Urls.First());
    }

    private async Task WaitReadyAsync(string url, Task<(int Exit, string Out, string Err)>[] serving)
    {
        for (int i = 0; i < 600; i++)
        {
            if (serving.FirstOrDefault(t => t.IsCompleted) is { } ended)
            {
                var (exit, output, error) = await ended;
                Assert.Fail($"cobra serve exited with {exit}: {output} {error}");
            }

            try
            {
                using var response = await http.PostAsync(url + "/v1/chat/completions", new StringContent("{}", Encoding.UTF8, "application/json"));
                if (response.StatusCode != HttpStatusCode.ServiceUnavailable)
                {
                    return;                                                      // loaded (this empty request is a 400)
                }
            }
            catch (HttpRequestException)
            {
            }

            await Task.Delay(100);
        }

        Assert.Fail($"{url} never became ready");
    }

    private static async Task WaitForKeysAsync(RedisServer redis)
    {
        await using var connection = await redis.ConnectAsync();
        var server = connection.GetServer(redis.Host, redis.Port);
        for (int i = 0; i < 600 && !server.Keys(pattern: "cobra:state:*").Any(); i++)
        {
            await Task.Delay(100);
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private sealed class CountingChatClient(IChatClient inner) : DelegatingChatClient(inner)
    {
        private int calls;

        public int Calls => Volatile.Read(ref calls);

        public override Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref calls);
            return base.GetResponseAsync(messages, options, cancellationToken);
        }

        public override IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref calls);
            return base.GetStreamingResponseAsync(messages, options, cancellationToken);
        }

        protected override void Dispose(bool disposing)
        {
            // The replica's client is disposed by the test.
        }
    }
}
