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

namespace Cobra.AI.Tests.Server;

/// <summary>The OpenAI-compatible endpoints on a loopback port over the tiny-a model.</summary>
public sealed class OpenAIEndpointTests : IAsyncLifetime
{
    private const string SceneAnswer = "onddOnTheassisassis&&& re onwsAnswercle l";
    private readonly HttpClient http = new() { Timeout = TimeSpan.FromMinutes(2) };
    private WebApplication app = null!;
    private string url = null!;

    public async Task InitializeAsync() => (app, url) = await StartAsync(await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu", MaxConcurrentRequests = 8 }), new OpenAIServerOptions());

    public async Task DisposeAsync()
    {
        await app.DisposeAsync();
        http.Dispose();
    }

    internal static async Task<(WebApplication App, string Url)> StartAsync(IChatClient client, OpenAIServerOptions options)
    {
        var (app, addresses) = await OpenAIServerHost.StartAsync(client, options, "http://127.0.0.1:0", LogLevel.None);
        return (app, addresses[0]);
    }

    private async Task<(HttpStatusCode Status, JsonElement Body)> Post(string json, string? key = null, string? baseUrl = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, (baseUrl ?? url) + "/v1/chat/completions") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (key is not null)
        {
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        }

        using var response = await http.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }

    private static string ImageRequest(bool stream = false) => JsonSerializer.Serialize(new
    {
        model = "cobra+3b",
        max_tokens = 16,
        stream,
        stream_options = new { include_usage = true },
        messages = new object[]
        {
            new
            {
                role = "user",
                content = new object[]
                {
                    new { type = "text", text = "What is going on in this image?" },
                    new { type = "image_url", image_url = new { url = "data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png"))) } },
                },
            },
        },
    });

    [Fact]
    public async Task Models_and_a_chat_completion_with_an_image_have_openai_shape()
    {
        using var models = JsonDocument.Parse(await http.GetStringAsync(url + "/v1/models"));
        Assert.Equal("cobra+3b", models.RootElement.GetProperty("data")[0].GetProperty("id").GetString());
        Assert.Equal(["text", "image"], models.RootElement.GetProperty("data")[0].GetProperty("input_modalities").EnumerateArray().Select(m => m.GetString()));

        var (status, body) = await Post(ImageRequest());
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("chat.completion", body.GetProperty("object").GetString());
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(SceneAnswer, choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(36, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(16, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task Streaming_sends_server_sent_events_with_usage_and_done()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions") { Content = new StringContent(ImageRequest(stream: true), Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).ToList();
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());
        string text = string.Concat(chunks.Where(c => c.GetProperty("choices").GetArrayLength() > 0)
            .Select(c => c.GetProperty("choices")[0].GetProperty("delta"))
            .Select(d => d.TryGetProperty("content", out var content) ? content.GetString() : ""));
        Assert.Equal(SceneAnswer, text);
        Assert.Equal(16, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task N_choices_on_the_tiny_model_are_the_single_answers_with_seeds_seed_plus_i()
    {
        static string Request(int n, int seed, bool stream = false) => JsonSerializer.Serialize(new { max_tokens = 8, temperature = 1.0, seed, n, stream, messages = new[] { new { role = "user", content = "Tell me a story" } } });
        var (status, body) = await Post(Request(3, 7));
        Assert.Equal(HttpStatusCode.OK, status);
        var choices = body.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("message").GetProperty("content").GetString()).ToList();
        Assert.Equal(3, choices.Count);
        for (int i = 0; i < 3; i++)
        {
            var (_, single) = await Post(Request(1, 7 + i));
            Assert.Equal(single.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(), choices[i]);
        }

        Assert.Equal(24, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.True(choices.Distinct().Count() > 1, "three sampled choices should not all be equal");

        using var request = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions") { Content = new StringContent(Request(3, 7, stream: true), Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request);
        var streamed = new StringBuilder[3].Select(_ => new StringBuilder()).ToArray();
        foreach (var choice in ServerFeatureTests.Events(await response.Content.ReadAsStringAsync())[..^1].SelectMany(e => JsonDocument.Parse(e).RootElement.GetProperty("choices").EnumerateArray().ToList()))
        {
            streamed[choice.GetProperty("index").GetInt32()].Append(choice.GetProperty("delta").TryGetProperty("content", out var c) ? c.GetString() : "");
        }

        Assert.Equal(choices, streamed.Select(s => s.ToString()));
    }

    [Fact]
    public async Task Logprobs_on_the_tiny_model_cover_every_token_and_greedy_picks_the_top_one()
    {
        var (status, body) = await Post(JsonSerializer.Serialize(new { max_tokens = 8, logprobs = true, top_logprobs = 3, messages = new[] { new { role = "user", content = "Hello" } } }));
        Assert.Equal(HttpStatusCode.OK, status);
        var choice = body.GetProperty("choices")[0];
        var tokens = choice.GetProperty("logprobs").GetProperty("content").EnumerateArray().ToList();
        Assert.Equal(body.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), tokens.Count);
        // The tokens' bytes spell the answer (the decoder drops the answer's leading space).
        byte[] spelled = [.. tokens.SelectMany(t => t.GetProperty("bytes").EnumerateArray().Select(b => (byte)b.GetInt32()))];
        Assert.Equal(choice.GetProperty("message").GetProperty("content").GetString(), Encoding.UTF8.GetString(spelled).TrimStart(' '));
        foreach (var token in tokens)
        {
            Assert.True(token.GetProperty("logprob").GetDouble() <= 0);
            var top = token.GetProperty("top_logprobs");
            Assert.Equal(3, top.GetArrayLength());
            Assert.Equal(token.GetProperty("token").GetString(), top[0].GetProperty("token").GetString());
            Assert.Equal(token.GetProperty("logprob").GetDouble(), top[0].GetProperty("logprob").GetDouble(), 6);
            Assert.True(top[1].GetProperty("logprob").GetDouble() <= top[0].GetProperty("logprob").GetDouble());
            if (!token.GetProperty("token").GetString()!.Contains('\uFFFD', StringComparison.Ordinal))
            {
                Assert.Equal(Encoding.UTF8.GetBytes(token.GetProperty("token").GetString()!).Select(b => (int)b), token.GetProperty("bytes").EnumerateArray().Select(b => b.GetInt32()));
            }
        }
    }

    [Fact]
    public async Task The_official_openai_dotnet_client_works_against_the_server_unchanged()
    {
        IChatClient viaOpenAI = new OpenAI.OpenAIClient(new System.ClientModel.ApiKeyCredential("unused"), new OpenAI.OpenAIClientOptions { Endpoint = new Uri(url + "/v1") })
            .GetChatClient("cobra+3b")
            .AsIChatClient();
        ChatMessage question = new(ChatRole.User, [new TextContent("What is going on in this image?"), new DataContent(File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png")), "image/png")]);
        var response = await viaOpenAI.GetResponseAsync([question], new ChatOptions { MaxOutputTokens = 16 });
        Assert.Equal(SceneAnswer, response.Text);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(16, response.Usage!.OutputTokenCount);

        var streamed = new StringBuilder();
        await foreach (var update in viaOpenAI.GetStreamingResponseAsync([question], new ChatOptions { MaxOutputTokens = 16 }))
        {
            streamed.Append(update.Text);
        }

        Assert.Equal(SceneAnswer, streamed.ToString());
        var stopped = await viaOpenAI.GetResponseAsync([question], new ChatOptions { MaxOutputTokens = 16, StopSequences = ["sis&"], Seed = 1 });
        Assert.Equal("onddOnTheassisas", stopped.Text);
    }

    [Theory]
    [InlineData("not json", HttpStatusCode.BadRequest)]
    [InlineData("""{"messages": []}""", HttpStatusCode.BadRequest)]
    [InlineData("""{"messages": [{"role": "user", "content": "x"}], "n": 99}""", HttpStatusCode.BadRequest)]
    [InlineData("""{"messages": [{"role": "user", "content": "x"}], "temperature": 5}""", HttpStatusCode.BadRequest)]
    [InlineData("""{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}""", HttpStatusCode.NotFound)]
    [InlineData("""{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}""", HttpStatusCode.BadRequest)]
    [InlineData("""{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]}""", HttpStatusCode.BadRequest)]
    [InlineData("""{"messages": [{"role": "user", "content": [{"type": "audio", "audio": {}}]}]}""", HttpStatusCode.BadRequest)]
    public async Task Bad_requests_get_openai_errors(string json, HttpStatusCode expected)
    {
        var (status, body) = await Post(json);
        Assert.Equal(expected, status);
        Assert.False(string.IsNullOrEmpty(body.GetProperty("error").GetProperty("message").GetString()));
    }

    [Fact]
    public async Task Api_key_is_required_when_configured()
    {
        var (keyed, keyedUrl) = await StartAsync(await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" }), new OpenAIServerOptions { ApiKey = "secret" });
        await using (keyed)
        {
            string json = """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}""";
            Assert.Equal(HttpStatusCode.Unauthorized, (await Post(json, baseUrl: keyedUrl)).Status);
            Assert.Equal(HttpStatusCode.Unauthorized, (await Post(json, "wrong", keyedUrl)).Status);
            Assert.Equal(HttpStatusCode.OK, (await Post(json, "secret", keyedUrl)).Status);
        }
    }

    [Fact]
    public async Task Oversized_bodies_get_413_and_a_full_queue_gets_429_with_retry_after()
    {
        var (limited, limitedUrl) = await StartAsync(await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" }), new OpenAIServerOptions { MaxRequestBytes = 300, MaxPendingRequests = 1 });
        await using (limited)
        {
            var big = await Post(ImageRequest(), baseUrl: limitedUrl);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, big.Status);

            const string Slow = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 4096, \"stream\": true}";
            using var cancel = new CancellationTokenSource();
            using var first = new HttpRequestMessage(HttpMethod.Post, limitedUrl + "/v1/chat/completions") { Content = new StringContent(Slow, Encoding.UTF8, "application/json") };

            // Headers come with the first generated token, so the first request holds the only slot from here on.
            using var streaming = await http.SendAsync(first, HttpCompletionOption.ResponseHeadersRead, cancel.Token);
            var running = streaming.Content.ReadAsStringAsync(cancel.Token);
            using var second = new HttpRequestMessage(HttpMethod.Post, limitedUrl + "/v1/chat/completions") { Content = new StringContent(Slow, Encoding.UTF8, "application/json") };
            using var refused = await http.SendAsync(second);
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
            Assert.NotNull(refused.Headers.RetryAfter);
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => running);
        }
    }

    [Fact]
    public async Task Loading_model_answers_503_with_retry_after()
    {
        var (loading, loadingUrl) = await StartAsync(new NotReadyClient(), new OpenAIServerOptions());
        await using (loading)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, loadingUrl + "/v1/chat/completions") { Content = new StringContent("""{"messages": [{"role": "user", "content": "Hi"}]}""", Encoding.UTF8, "application/json") };
            using var response = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.True(response.Headers.RetryAfter is not null);
        }
    }

    [Fact]
    public async Task Sixty_four_concurrent_streams_complete_with_the_sequential_answers()
    {
        string Request(int i) => JsonSerializer.Serialize(new { max_tokens = 8, stream = i % 2 == 0, messages = new[] { new { role = "user", content = $"Question {i % 5}" } } });
        var expected = new Dictionary<int, string>();
        for (int i = 0; i < 5; i++)
        {
            var (_, body) = await Post(JsonSerializer.Serialize(new { max_tokens = 8, messages = new[] { new { role = "user", content = $"Question {i}" } } }));
            expected[i] = body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
        }

        var answers = await Task.WhenAll(Enumerable.Range(0, 64).Select(async i =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions") { Content = new StringContent(Request(i), Encoding.UTF8, "application/json") };
            using var response = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            string text = await response.Content.ReadAsStringAsync();
            if (i % 2 == 1)
            {
                return JsonDocument.Parse(text).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
            }

            return string.Concat(text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).Where(e => e != "[DONE]")
                .Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")).Where(c => c.GetArrayLength() > 0)
                .Select(c => c[0].GetProperty("delta").TryGetProperty("content", out var content) ? content.GetString() : ""));
        }));

        for (int i = 0; i < 64; i++)
        {
            Assert.Equal(expected[i % 5], answers[i]);
        }
    }

    private sealed class NotReadyClient : IChatClient
    {
        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) => throw new ModelNotReadyException();

        public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) => throw new ModelNotReadyException();

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose()
        {
        }
    }
}
