using System.Diagnostics;
using System.Text.Json;
using Cobra.AI.Server;
using Xunit;

namespace Cobra.AI.Tests.Server;

/// <summary>
/// The official <c>openai</c> npm client (installed by the test with npm into the test output folder) against
/// the endpoints on a loopback port: text, image data URL, streaming with usage, stop, seed, models, errors.
/// </summary>
public sealed class OpenAINpmClientTests
{
    private const string SceneAnswer = "onddOnTheassisassis&&& re onwsAnswercle l";

    private static async Task<(int Exit, string Out, string Err)> Run(string file, string arguments, string directory, IDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(file, arguments) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout, await stderr);
    }

    [Fact]
    public async Task The_official_openai_npm_client_gets_openai_shaped_answers_and_errors()
    {
        string node = await InstallAsync();
        var cobra = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" });
        var (app, url) = await OpenAIEndpointTests.StartAsync(cobra, new OpenAIServerOptions { ApiKey = "secret" });
        await using (app)
        {
            var (exit, output, error) = await Run("node", "openai-client-check.mjs", node, new Dictionary<string, string>
            {
                ["BASE_URL"] = url + "/v1",
                ["API_KEY"] = "secret",
                ["IMAGE"] = Golden.Fixtures("tiny-a", "images", "scene_100x70.png"),
            });
            Assert.True(exit == 0, error);
            var seen = JsonDocument.Parse(output).RootElement;
            Assert.Equal(SceneAnswer, seen.GetProperty("text").GetString());
            Assert.Equal("length", seen.GetProperty("finish").GetString());
            Assert.Equal(36, seen.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            Assert.Equal(SceneAnswer, seen.GetProperty("streamText").GetString());
            Assert.Equal(16, seen.GetProperty("streamUsage").GetProperty("completion_tokens").GetInt32());
            Assert.Equal("onddOnTheassisas", seen.GetProperty("stopped").GetString());
            Assert.Equal(seen.GetProperty("seeded")[0].GetString(), seen.GetProperty("seeded")[1].GetString());
            Assert.Equal("cobra+3b", seen.GetProperty("models")[0].GetString());
            var errors = seen.GetProperty("errors");
            Assert.Equal(404, errors.GetProperty("model").GetInt32());
            Assert.Equal(400, errors.GetProperty("malformed").GetInt32());
            Assert.Equal(400, errors.GetProperty("image").GetInt32());
            Assert.Equal(401, errors.GetProperty("key").GetInt32());
        }
    }

    [Fact]
    public async Task The_official_openai_npm_client_gets_response_format_n_logprobs_refusals_health_and_metrics()
    {
        string node = await InstallAsync();
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions { ApiKey = "secret" });
        await using (app)
        {
            var (exit, output, error) = await Run("node", "openai-features-check.mjs", node, new Dictionary<string, string> { ["BASE_URL"] = url + "/v1", ["API_KEY"] = "secret" });
            Assert.True(exit == 0, error);
            var seen = JsonDocument.Parse(output).RootElement;
            Assert.Equal(1, seen.GetProperty("jsonSchema").GetInt32());
            Assert.Equal(1, seen.GetProperty("jsonObject").GetInt32());
            var choices = seen.GetProperty("choices");
            Assert.Equal(3, choices.GetArrayLength());
            for (int i = 0; i < 3; i++)
            {
                Assert.Equal(i, choices[i].GetProperty("index").GetInt32());
                Assert.Equal($"choice {i}", choices[i].GetProperty("text").GetString());
                Assert.Equal(i % 2 == 0 ? "stop" : "length", choices[i].GetProperty("finish").GetString());
                Assert.Equal(["choice ", $"{i}"], choices[i].GetProperty("tokens").EnumerateArray().Select(t => t.GetString()));
                Assert.Equal(2, choices[i].GetProperty("top").GetInt32());
                Assert.Equal("choice "u8.ToArray().Select(b => (int)b), choices[i].GetProperty("bytes").EnumerateArray().Select(b => b.GetInt32()));
            }

            Assert.Equal(["choice 0", "choice 1"], seen.GetProperty("streamed").EnumerateArray().Select(t => t.GetString()));
            Assert.Equal(["choice ", "1"], seen.GetProperty("streamTokens")[1].EnumerateArray().Select(t => t.GetString()));
            Assert.Equal(4, seen.GetProperty("streamUsage").GetProperty("completion_tokens").GetInt32());
            foreach (var (name, param) in new[] { ("audio", "audio"), ("tool_choice", "tool_choice"), ("prediction", "prediction"), ("n", "n"), ("top_logprobs", "top_logprobs") })
            {
                var refusal = seen.GetProperty("refused").GetProperty(name);
                Assert.Equal(400, refusal.GetProperty("status").GetInt32());
                Assert.Equal(param, refusal.GetProperty("param").GetString());
            }

            Assert.Equal(200, seen.GetProperty("health").GetProperty("status").GetInt32());
            Assert.Equal("ok", seen.GetProperty("health").GetProperty("body").GetProperty("status").GetString());
            Assert.Equal(200, seen.GetProperty("metrics").GetProperty("status").GetInt32());
            Assert.True(seen.GetProperty("metrics").GetProperty("requests").GetInt32() >= 2);
        }
    }

    private static async Task<string> InstallAsync()
    {
        string node = Path.Combine(AppContext.BaseDirectory, "node");
        if (!Directory.Exists(Path.Combine(node, "node_modules", "openai")))
        {
            var install = await Run("npm", "install --no-audit --no-fund --loglevel=error", node);
            Assert.True(install.Exit == 0, "npm install failed: " + install.Err);
        }

        return node;
    }
}
