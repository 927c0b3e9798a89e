using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
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

/// <summary>The server's request mapping, refusals, bounds, health, metrics and shutdown, over scripted chat clients on loopback.</summary>
public sealed class ServerFeatureTests
{
    internal static readonly HttpClient Http = new() { Timeout = TimeSpan.FromMinutes(1) };

    internal static async Task<(HttpStatusCode Status, JsonElement Body, HttpResponseMessage Response)> Post(string url, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        var response = await Http.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.StartsWith('{') ? JsonDocument.Parse(text).RootElement.Clone() : default, response);
    }

    /// <summary>The data of each server-sent event.</summary>
    internal static List<string> Events(string body) =>
        [.. body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => Assert.Single(e.Split('\n'), l => l.StartsWith("data: ", StringComparison.Ordinal))["data: ".Length..])];

    internal static string Chat(string extra = "") => "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]" + extra + "}";

    [Fact]
    public async Task Response_format_reaches_the_chat_client_as_chat_options()
    {
        var client = ScriptedChatClient.CobraLike();
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions());
        await using (app)
        {
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat(", \"response_format\": {\"type\": \"json_object\"}"))).Status);
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat(", \"response_format\": {\"type\": \"text\"}"))).Status);
            const string Schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},\"required\":[\"name\"],\"additionalProperties\":false}";
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat(", \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"person\", \"description\": \"A person\", \"strict\": true, \"schema\": " + Schema + "}}"))).Status);
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat(", \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"loose\", \"strict\": false, \"schema\": " + Schema + "}}"))).Status);
            var calls = client.Calls.ToArray();
            var json = Assert.IsType<ChatResponseFormatJson>(calls[0].ResponseFormat);
            Assert.Null(json.Schema);
            Assert.IsType<ChatResponseFormatText>(calls[1].ResponseFormat);
            var schema = Assert.IsType<ChatResponseFormatJson>(calls[2].ResponseFormat);
            Assert.Equal("person", schema.SchemaName);
            Assert.Equal("A person", schema.SchemaDescription);
            Assert.Equal("name", schema.Schema!.Value.GetProperty("required")[0].GetString());
            Assert.False(schema.Schema.Value.GetProperty("additionalProperties").GetBoolean());
            Assert.Equal("loose", Assert.IsType<ChatResponseFormatJson>(calls[3].ResponseFormat).SchemaName);
        }
    }

    [Fact]
    public async Task N_choices_from_a_cobra_client_are_routed_by_choice_index()
    {
        var client = ScriptedChatClient.CobraLike();
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions());
        await using (app)
        {
            var (status, body, _) = await Post(url, Chat(", \"n\": 3, \"seed\": 7"));
            Assert.Equal(HttpStatusCode.OK, status);
            var choices = body.GetProperty("choices");
            Assert.Equal(3, choices.GetArrayLength());
            for (int i = 0; i < 3; i++)
            {
                Assert.Equal(i, choices[i].GetProperty("index").GetInt32());
                Assert.Equal($"choice {i}", choices[i].GetProperty("message").GetProperty("content").GetString());
                Assert.Equal(i % 2 == 0 ? "stop" : "length", choices[i].GetProperty("finish_reason").GetString());
                Assert.Equal(JsonValueKind.Null, choices[i].GetProperty("logprobs").ValueKind);
            }

            Assert.Equal(5, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            Assert.Equal(6, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            Assert.Equal(3, body.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
            var call = Assert.Single(client.Calls);
            Assert.Equal(3, call.AdditionalProperties![CobraAdditionalProperties.ChoiceCount]);
            Assert.Equal(7, call.Seed);

            var (_, _, response) = await Post(url, Chat(", \"n\": 3, \"stream\": true, \"stream_options\": {\"include_usage\": true}"));
            var events = Events(await response.Content.ReadAsStringAsync());
            Assert.Equal("[DONE]", events[^1]);
            var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
            var texts = new StringBuilder[3].Select(_ => new StringBuilder()).ToArray();
            var finishes = new string?[3];
            foreach (var choice in chunks.SelectMany(c => c.GetProperty("choices").EnumerateArray()))
            {
                int index = choice.GetProperty("index").GetInt32();
                texts[index].Append(choice.GetProperty("delta").TryGetProperty("content", out var content) ? content.GetString() : "");
                finishes[index] ??= choice.GetProperty("finish_reason").GetString();
            }

            Assert.Equal(["choice 0", "choice 1", "choice 2"], texts.Select(t => t.ToString()));
            Assert.Equal(["stop", "length", "stop"], finishes.Select(f => f ?? "none"));
            Assert.Equal(6, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        }
    }

    [Fact]
    public async Task N_choices_from_another_client_fan_out_with_offset_seeds()
    {
        var client = ScriptedChatClient.Other();
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions());
        await using (app)
        {
            var (status, body, _) = await Post(url, Chat(", \"n\": 3, \"seed\": 7"));
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal(["seed 7", "seed 8", "seed 9"], body.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("message").GetProperty("content").GetString()));
            Assert.Equal(6, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            Assert.All(client.Calls, c => Assert.False(c.AdditionalProperties?.ContainsKey(CobraAdditionalProperties.ChoiceCount) ?? false));

            var (_, _, response) = await Post(url, Chat(", \"n\": 2, \"seed\": 1, \"stream\": true"));
            var chunks = Events(await response.Content.ReadAsStringAsync())[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
            Assert.Equal("seed 1", string.Concat(chunks.Where(c => c.GetProperty("index").GetInt32() == 0).Select(c => c.GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : "")));
            Assert.Equal("seed 2", string.Concat(chunks.Where(c => c.GetProperty("index").GetInt32() == 1).Select(c => c.GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : "")));
        }
    }

    [Fact]
    public async Task Logprobs_map_to_openai_shape_streaming_and_not()
    {
        var client = ScriptedChatClient.CobraLike();
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions());
        await using (app)
        {
            var (status, body, _) = await Post(url, Chat(", \"logprobs\": true, \"top_logprobs\": 2"));
            Assert.Equal(HttpStatusCode.OK, status);
            var call = Assert.Single(client.Calls);
            Assert.Equal(true, call.AdditionalProperties![CobraAdditionalProperties.Logprobs]);
            Assert.Equal(2, call.AdditionalProperties[CobraAdditionalProperties.TopLogprobs]);
            var content = body.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("content");
            Assert.Equal(2, content.GetArrayLength());
            Assert.Equal("choice ", content[0].GetProperty("token").GetString());
            Assert.Equal(-0.5, content[0].GetProperty("logprob").GetDouble());
            Assert.Equal("choice "u8.ToArray().Select(b => (int)b), content[0].GetProperty("bytes").EnumerateArray().Select(b => b.GetInt32()));
            Assert.Equal(["choice 0", "choice 1"], content[0].GetProperty("top_logprobs").EnumerateArray().Select(t => t.GetProperty("token").GetString()));
            Assert.Equal(-1.5, content[0].GetProperty("top_logprobs")[1].GetProperty("logprob").GetDouble());
            Assert.Equal("0", content[1].GetProperty("token").GetString());
            Assert.Equal(-1.25, content[1].GetProperty("logprob").GetDouble());

            var (_, _, response) = await Post(url, Chat(", \"logprobs\": true, \"stream\": true"));
            var tokens = Events(await response.Content.ReadAsStringAsync())[..^1]
                .Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0])
                .Where(c => c.TryGetProperty("logprobs", out var l) && l.ValueKind == JsonValueKind.Object)
                .SelectMany(c => c.GetProperty("logprobs").GetProperty("content").EnumerateArray())
                .ToList();
            Assert.Equal(["choice ", "0"], tokens.Select(t => t.GetProperty("token").GetString()));
            Assert.All(tokens, t => Assert.Equal(0, t.GetProperty("top_logprobs").GetArrayLength()));
        }
    }

    [Theory]
    [InlineData(", \"logprobs\": true", "logprobs")]
    [InlineData(", \"repetition_penalty\": 1.2", "repetition_penalty")]
    [InlineData(", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]", "tools")]
    public async Task Cobra_only_fields_are_refused_for_another_client(string extra, string param)
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.Other(), new OpenAIServerOptions());
        await using (app)
        {
            var (status, body, _) = await Post(url, Chat(extra));
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Equal(param, body.GetProperty("error").GetProperty("param").GetString());
        }
    }

    [Theory]
    [InlineData(", \"audio\": {\"voice\": \"alloy\", \"format\": \"wav\"}", "audio")]
    [InlineData(", \"modalities\": [\"text\", \"audio\"]", "modalities")]
    [InlineData(", \"prediction\": {\"type\": \"content\", \"content\": \"x\"}", "prediction")]
    [InlineData(", \"web_search_options\": {}", "web_search_options")]
    [InlineData(", \"logit_bias\": {\"50256\": -100}", "logit_bias")]
    [InlineData(", \"functions\": [{\"name\": \"f\"}]", "functions")]
    [InlineData(", \"no_such_field\": 1", "no_such_field")]
    [InlineData(", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"required\"", "tool_choice")]
    [InlineData(", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"f\"}}", "tool_choice")]
    [InlineData(", \"tools\": [{\"type\": \"custom\", \"custom\": {\"name\": \"f\"}}]", "tools[0]")]
    [InlineData(", \"n\": 9", "n")]
    [InlineData(", \"n\": 0", "n")]
    [InlineData(", \"top_logprobs\": 21, \"logprobs\": true", "top_logprobs")]
    [InlineData(", \"top_logprobs\": 2", "top_logprobs")]
    [InlineData(", \"max_tokens\": 4097", "max_tokens")]
    [InlineData(", \"max_completion_tokens\": 2147483647", "max_completion_tokens")]
    [InlineData(", \"max_tokens\": 1e30", "max_tokens")]
    [InlineData(", \"temperature\": \"hot\"", "temperature")]
    [InlineData(", \"stream\": \"yes\"", "stream")]
    [InlineData(", \"stop\": 5", "stop")]
    [InlineData(", \"stop\": [\"\"]", "stop")]
    [InlineData(", \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]", "stop")]
    [InlineData(", \"response_format\": {\"type\": \"xml\"}", "response_format.type")]
    [InlineData(", \"response_format\": {\"type\": \"json_schema\"}", "response_format.json_schema")]
    [InlineData(", \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", \"schema\": 3}}", "response_format.json_schema.schema")]
    [InlineData(", \"response_format\": {\"type\": \"json_object\", \"json_schema\": {\"name\": \"x\"}}", "response_format.json_schema")]
    [InlineData(", \"stream_options\": {\"include_obfuscation\": true}", "stream_options.include_obfuscation")]
    [InlineData(", \"model\": \"\\ud800\"", "model")]
    public async Task Unsupported_or_invalid_fields_get_400_naming_the_field(string extra, string param)
    {
        var client = ScriptedChatClient.CobraLike();
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions());
        await using (app)
        {
            var (status, body, _) = await Post(url, Chat(extra));
            Assert.Equal(HttpStatusCode.BadRequest, status);
            var error = body.GetProperty("error");
            Assert.Equal(param, error.GetProperty("param").GetString());
            Assert.Contains(param.Split('[', '.')[0], error.GetProperty("message").GetString(), StringComparison.Ordinal);
            Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
            Assert.Empty(client.Calls);
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat())).Status);
        }
    }

    [Theory]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"\\udc00 lone\"}]}", "messages[0].content")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"\\ud800\"}]}]}", "messages[0].content[0].text")]
    [InlineData("{\"messages\": [{\"role\": \"tool\", \"content\": \"42\", \"tool_call_id\": \"a\"}]}", "messages[0].role")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"x\", \"audio\": {}}]}", "messages[0].audio")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages[0].content")]
    [InlineData("{\"messages\": [{\"role\": 5, \"content\": \"x\"}]}", "messages[0].role")]
    [InlineData("{\"messages\": {\"role\": \"user\"}}", "messages")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_audio\", \"input_audio\": {}}]}]}", "messages[0].content[0].type")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": \"data:text/plain;base64,iVBORw0KGgo=\"}}]}]}", "messages[0].content[0].image_url.url")]
    public async Task Bad_messages_get_400_naming_the_field_not_500(string json, string param)
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions());
        await using (app)
        {
            var (status, body, _) = await Post(url, json);
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Equal(param, body.GetProperty("error").GetProperty("param").GetString());
        }
    }

    [Fact]
    public async Task Message_count_is_bounded_while_parsing()
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions { MaxMessages = 10 });
        await using (app)
        {
            string Messages(int count) => "{\"messages\": [" + string.Join(",", Enumerable.Repeat("{\"role\": \"user\", \"content\": \"x\"}", count)) + "]}";
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Messages(10))).Status);
            var (status, body, _) = await Post(url, Messages(11));
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Equal("messages", body.GetProperty("error").GetProperty("param").GetString());
        }
    }

    [Fact]
    public async Task Engine_refusals_get_their_status_and_unexpected_errors_a_logged_500_without_details()
    {
        Exception? next = null;
        var client = new ScriptedChatClient("cobra", (_, _) => Throwing(next!));
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions());
        await using (app)
        {
            async Task<(HttpStatusCode, JsonElement, HttpResponseMessage)> With(Exception e, bool stream = false)
            {
                next = e;
                return await Post(url, Chat(stream ? ", \"stream\": true" : ""));
            }

            var (status, _, response) = await With(new CobraQueueFullException(8, 8));
            Assert.Equal(HttpStatusCode.TooManyRequests, status);
            Assert.NotNull(response.Headers.RetryAfter);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await With(new CobraImageLimitException("The image has 50000000 pixels, over MaxImagePixels = 40000000.", "MaxImagePixels"))).Item1);
            Assert.Equal(HttpStatusCode.BadRequest, (await With(new InvalidDataException("The image has 50000000 pixels, over MaxImagePixels = 40000000."))).Item1); // typed, never matched by text
            Assert.Equal(HttpStatusCode.NotFound, (await With(new CobraConversationNotFoundException("c1"))).Item1);
            Assert.Equal(HttpStatusCode.BadRequest, (await With(new NotSupportedException("Cobra cannot call tools."), stream: true)).Item1);
            var (failed, body, _) = await With(new InvalidOperationException("secret internal path /opt/x"));
            Assert.Equal(HttpStatusCode.InternalServerError, failed);
            Assert.DoesNotContain("secret", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
            Assert.Equal("server_error", body.GetProperty("error").GetProperty("type").GetString());
        }
    }

    [Fact]
    public async Task Health_is_503_while_loading_and_200_when_ready_and_models_lists_image_input()
    {
        var loading = new LoadingChatClient();
        var (app, url) = await OpenAIEndpointTests.StartAsync(loading, new OpenAIServerOptions());
        await using (app)
        {
            using var during = await Http.GetAsync(url + "/health");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, during.StatusCode);
            Assert.Equal("loading", JsonDocument.Parse(await during.Content.ReadAsStringAsync()).RootElement.GetProperty("status").GetString());
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await Post(url, Chat())).Status);

            loading.Inner = ScriptedChatClient.CobraLike();
            using var after = await Http.GetAsync(url + "/health");
            Assert.Equal(HttpStatusCode.OK, after.StatusCode);
            Assert.Equal("ok", JsonDocument.Parse(await after.Content.ReadAsStringAsync()).RootElement.GetProperty("status").GetString());
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat())).Status);
            var model = JsonDocument.Parse(await Http.GetStringAsync(url + "/v1/models")).RootElement.GetProperty("data")[0];
            Assert.Equal(["text", "image"], model.GetProperty("input_modalities").EnumerateArray().Select(m => m.GetString()));
        }

        var (other, otherUrl) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.Other(), new OpenAIServerOptions());
        await using (other)
        {
            var model = JsonDocument.Parse(await Http.GetStringAsync(otherUrl + "/v1/models")).RootElement.GetProperty("data")[0];
            Assert.Equal(["text"], model.GetProperty("input_modalities").EnumerateArray().Select(m => m.GetString()));
        }
    }

    [Fact]
    public async Task Metrics_scrape_is_prometheus_text_with_the_server_instruments()
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions());
        await using (app)
        {
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat(", \"n\": 2"))).Status);
            Assert.Equal(HttpStatusCode.BadRequest, (await Post(url, Chat(", \"n\": 99"))).Status);
            using var scrape = await Http.GetAsync(url + "/metrics");
            Assert.Equal(HttpStatusCode.OK, scrape.StatusCode);
            Assert.StartsWith("text/plain", scrape.Content.Headers.ContentType!.MediaType, StringComparison.Ordinal);
            var samples = new Dictionary<string, double>();
            foreach (string line in (await scrape.Content.ReadAsStringAsync()).Split('\n'))
            {
                if (line.Length == 0 || line.StartsWith('#'))
                {
                    continue;
                }

                // name{labels} value [timestamp]
                int brace = line.IndexOf('}', StringComparison.Ordinal);
                string[] rest = line[(brace + 1)..].Trim().Split(' ');
                string series = brace < 0 ? line.Split(' ')[0] : line[..(brace + 1)];
                samples[series] = double.Parse(brace < 0 ? line.Split(' ')[1] : rest[0], System.Globalization.CultureInfo.InvariantCulture);
            }

            double Sum(string prefix, string? label = null) => samples.Where(s => s.Key.StartsWith(prefix, StringComparison.Ordinal) && (label is null || s.Key.Contains(label, StringComparison.Ordinal))).Sum(s => s.Value);
            Assert.True(Sum("cobra_server_requests_total", "http_response_status_code=\"200\"") >= 1);
            Assert.True(Sum("cobra_server_requests_total", "http_response_status_code=\"400\"") >= 1);
            Assert.True(Sum("cobra_server_tokens_input_total") >= 5);
            Assert.True(Sum("cobra_server_tokens_output_total") >= 4);
            Assert.True(Sum("cobra_server_tokens_cached_total") >= 3);
            Assert.True(Sum("cobra_server_cache_hits_total") >= 1);
            Assert.True(Sum("cobra_server_time_to_first_token_seconds_count") >= 1);
            Assert.Contains(samples.Keys, k => k.StartsWith("cobra_server_requests_in_flight", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task A_body_over_the_limit_gets_413_with_or_without_content_length()
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions { MaxRequestBytes = 1000 });
        await using (app)
        {
            string big = Chat(", \"user\": \"" + new string('x', 2000) + "\"");
            var (status, body, _) = await Post(url, big);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
            Assert.Contains("1000 bytes", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);

            // Chunked: no Content-Length, so Kestrel's limit stops the read.
            using var chunked = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions") { Content = new PushContent(Encoding.UTF8.GetBytes(big)) };
            using var response = await Http.SendAsync(chunked);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat())).Status);
        }

        // The default limit is Kestrel's: a body just over it gets 413, not 500.
        Assert.Equal(OpenAIServerOptions.KestrelDefaultMaxRequestBytes, new OpenAIServerOptions().MaxRequestBytes);
        var (defaults, defaultsUrl) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions());
        await using (defaults)
        {
            var (status, _, _) = await Post(defaultsUrl, Chat(", \"user\": \"" + new string('x', 30_000_001) + "\""));
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
            Assert.Equal(HttpStatusCode.OK, (await Post(defaultsUrl, Chat())).Status);
        }
    }

    [Fact]
    public async Task A_slow_body_times_out_with_408_and_does_not_hold_a_pending_slot()
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions { MaxPendingRequests = 1, BodyReadTimeout = TimeSpan.FromSeconds(2) });
        await using (app)
        {
            var uri = new Uri(url);
            using var slow = new TcpClient();
            await slow.ConnectAsync(uri.Host, uri.Port);
            var stream = slow.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"POST /v1/chat/completions HTTP/1.1\r\nHost: {uri.Authority}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"messages\": ["));

            // The upload is open and unfinished: real requests are still served, not refused with 429.
            for (int i = 0; i < 3; i++)
            {
                Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat())).Status);
            }

            using var reader = new StreamReader(stream, Encoding.ASCII);
            string? statusLine = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.StartsWith("HTTP/1.1 408", statusLine, StringComparison.Ordinal);
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat())).Status);
        }
    }

    [Fact]
    public async Task The_pending_slot_is_taken_by_admitted_requests_only()
    {
        var release = new TaskCompletionSource();
        var client = new ScriptedChatClient("cobra", (_, token) => Held(release.Task, token));
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions { MaxPendingRequests = 1 });
        await using (app)
        {
            var held = Post(url, Chat());
            while (client.Calls.IsEmpty)
            {
                await Task.Delay(20);
            }

            var (status, _, response) = await Post(url, Chat());
            Assert.Equal(HttpStatusCode.TooManyRequests, status);
            Assert.NotNull(response.Headers.RetryAfter);

            // A refused-at-validation request never takes the slot either.
            Assert.Equal(HttpStatusCode.BadRequest, (await Post(url, Chat(", \"n\": 99"))).Status);
            release.SetResult();
            Assert.Equal(HttpStatusCode.OK, (await held).Status);
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat())).Status);
        }
    }

    [Fact]
    public async Task Shutdown_lets_streams_finish_within_the_grace_period_and_refuses_new_requests()
    {
        var release = new TaskCompletionSource();
        var client = new ScriptedChatClient("cobra", (_, token) => Held(release.Task, token));
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions { ShutdownGracePeriod = TimeSpan.FromSeconds(30) });
        await using (app)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions") { Content = new StringContent(Chat(", \"stream\": true"), Encoding.UTF8, "application/json") };
            using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());

            // Each event is flushed as it is made: "he" arrives while the generation is still held.
            string? line;
            while ((line = await reader.ReadLineAsync()) is not null && !line.Contains("\"he\"", StringComparison.Ordinal))
            {
            }

            Assert.NotNull(line);
            var stopping = app.StopAsync();

            // Kestrel stops listening at once; a request that still gets through is refused with 503.
            try
            {
                using var late = await Http.GetAsync(url + "/health");
                Assert.Equal(HttpStatusCode.ServiceUnavailable, late.StatusCode);
            }
            catch (HttpRequestException)
            {
            }

            release.SetResult();
            var events = Events(await reader.ReadToEndAsync());
            await stopping;
            Assert.Equal("[DONE]", events[^1]);
            Assert.DoesNotContain(events, e => e.Contains("\"error\"", StringComparison.Ordinal));
            Assert.Contains(events, e => e.Contains("\"ld\"", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task A_request_past_its_deadline_is_stopped_with_504_or_an_error_event()
    {
        var client = new ScriptedChatClient("cobra", (_, token) => Held(Task.Delay(Timeout.Infinite, token), token));
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions { RequestTimeout = TimeSpan.FromMilliseconds(300) });
        await using (app)
        {
            var (status, body, _) = await Post(url, Chat());
            Assert.Equal(HttpStatusCode.GatewayTimeout, status);
            Assert.Equal("request_timeout", body.GetProperty("error").GetProperty("code").GetString());

            var (_, _, response) = await Post(url, Chat(", \"stream\": true"));
            var events = Events(await response.Content.ReadAsStringAsync());
            Assert.Equal("[DONE]", events[^1]);
            Assert.Equal("request_timeout", JsonDocument.Parse(events[^2]).RootElement.GetProperty("error").GetProperty("code").GetString());
        }
    }

    [Fact]
    public async Task Invalid_utf8_in_the_body_gets_400()
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions());
        await using (app)
        {
            byte[] body = [.. "{\"messages\": [{\"role\": \"user\", \"content\": \""u8, 0xFF, 0xFE, .. "\"}]}"u8];
            using var content = new ByteArrayContent(body);
            content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            using var response = await Http.PostAsync(url + "/v1/chat/completions", content);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal("invalid_request_error", JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("type").GetString());
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("  ")]
    public async Task An_empty_api_key_refuses_to_start(string key)
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions { ApiKey = key }));
        Assert.Contains("ApiKey", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Endpoints_mapped_on_any_app_log_a_500_with_its_exception_and_refusals_at_debug()
    {
        var logs = new CapturingLoggerProvider();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders().AddProvider(logs).SetMinimumLevel(LogLevel.Debug);
        builder.Services.AddSingleton<IChatClient>(new ScriptedChatClient("cobra", (_, _) => Throwing(new InvalidOperationException("boom inside"))));
        var app = builder.Build();
        app.MapOpenAIChatCompletions();
        await app.StartAsync();
        await using (app)
        {
            string url = app.Urls.First();
            Assert.Equal(HttpStatusCode.InternalServerError, (await Post(url, Chat())).Status);
            Assert.Equal(HttpStatusCode.BadRequest, (await Post(url, Chat(", \"audio\": {}"))).Status);
            Assert.Contains(logs.Entries, e => e.Category == "Cobra.AI.Server" && e.Level == LogLevel.Error && e.Exception?.Message == "boom inside");
            Assert.Contains(logs.Entries, e => e.Category == "Cobra.AI.Server" && e.Level == LogLevel.Debug && e.Message.Contains("audio", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task Once_the_host_is_stopping_new_requests_and_health_get_503()
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions());
        await using (app)
        {
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat())).Status);

            // Fires ApplicationStopping while Kestrel still listens (nothing waits for shutdown on a started host).
            app.Lifetime.StopApplication();
            var (status, body, response) = await Post(url, Chat());
            Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
            Assert.Equal("server_shutting_down", body.GetProperty("error").GetProperty("code").GetString());
            Assert.NotNull(response.Headers.RetryAfter);
            using var health = await Http.GetAsync(url + "/health");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
            Assert.Equal("stopping", JsonDocument.Parse(await health.Content.ReadAsStringAsync()).RootElement.GetProperty("status").GetString());
        }
    }

    [Fact]
    public async Task Tools_with_auto_choice_reach_cobra_as_declarations()
    {
        var client = ScriptedChatClient.CobraLike();
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions());
        await using (app)
        {
            const string Tools = ", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"lookup\", \"description\": \"Looks up\", \"parameters\": {\"type\": \"object\", \"properties\": {\"q\": {\"type\": \"string\"}}}}}]";
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat(Tools + ", \"tool_choice\": \"auto\""))).Status);
            Assert.Equal(HttpStatusCode.OK, (await Post(url, Chat(Tools + ", \"tool_choice\": \"none\""))).Status);
            var calls = client.Calls.ToArray();
            var tool = Assert.IsAssignableFrom<AIFunctionDeclaration>(Assert.Single(calls[0].Tools!));
            Assert.Equal("lookup", tool.Name);
            Assert.Equal("Looks up", tool.Description);
            Assert.Equal("string", tool.JsonSchema.GetProperty("properties").GetProperty("q").GetProperty("type").GetString());
            Assert.IsType<AutoChatToolMode>(calls[0].ToolMode);
            Assert.Null(calls[1].Tools);
        }
    }

    [Fact]
    public async Task Shutdown_ends_streams_past_the_grace_period_with_an_error_event_and_done()
    {
        var client = new ScriptedChatClient("cobra", (_, token) => Held(Task.Delay(Timeout.Infinite, token), token));
        var (app, url) = await OpenAIEndpointTests.StartAsync(client, new OpenAIServerOptions { ShutdownGracePeriod = TimeSpan.FromMilliseconds(300) });
        await using (app)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions") { Content = new StringContent(Chat(", \"stream\": true"), Encoding.UTF8, "application/json") };
            using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            var body = response.Content.ReadAsStringAsync();
            await app.StopAsync();
            var events = Events(await body.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal("[DONE]", events[^1]);
            var error = JsonDocument.Parse(events[^2]).RootElement.GetProperty("error");
            Assert.Equal("server_shutting_down", error.GetProperty("code").GetString());
        }
    }

    /// <summary>Sends "he", waits for <paramref name="gate"/>, then "ld".</summary>
    private static async IAsyncEnumerable<ChatResponseUpdate> Held(Task gate, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        yield return new ChatResponseUpdate(ChatRole.Assistant, "he");
        await gate.WaitAsync(cancellationToken);
        yield return new ChatResponseUpdate(ChatRole.Assistant, "ld") { FinishReason = ChatFinishReason.Stop };
    }

    private static async IAsyncEnumerable<ChatResponseUpdate> Throwing(Exception e)
    {
        await Task.Yield();
        if (e is not null)
        {
            throw e;
        }

        yield break;
    }

    private sealed class CapturingLoggerProvider : ILoggerProvider
    {
        public System.Collections.Concurrent.ConcurrentQueue<(string Category, LogLevel Level, string Message, Exception? Exception)> Entries { get; } = new();

        public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

        public void Dispose()
        {
        }

        private sealed class Logger(CapturingLoggerProvider owner, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                owner.Entries.Enqueue((category, logLevel, formatter(state, exception), exception));
        }
    }

    /// <summary>Content without a known length, sent chunked.</summary>
    private sealed class PushContent(byte[] bytes) : HttpContent
    {
        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => stream.WriteAsync(bytes).AsTask();

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
