using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using Xunit;

namespace Cobra.AI.Tests.Server;

/// <summary><c>cobra serve</c> as a real process, stopped with SIGTERM while it streams.</summary>
public sealed class ServeShutdownTests
{
    [Fact]
    public async Task Sigterm_during_a_stream_ends_it_with_done_and_the_process_exits_cleanly()
    {
        if (OperatingSystem.IsWindows())
        {
            return; // No SIGTERM to send.
        }

        var start = new ProcessStartInfo("dotnet", ["cobra.dll", "serve", "--model-dir", Golden.TinyAHub, "--urls", "http://127.0.0.1:0"])
        {
            WorkingDirectory = AppContext.BaseDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            string? url = null;
            using var startup = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            while (await process.StandardOutput.ReadLineAsync(startup.Token) is { } line)
            {
                url ??= line.Split(' ').FirstOrDefault(w => w.StartsWith("http://", StringComparison.Ordinal))?.TrimEnd(';');
                if (line.Contains("ready", StringComparison.Ordinal))
                {
                    break;
                }
            }

            Assert.NotNull(url);
            var stdout = process.StandardOutput.ReadToEndAsync();
            using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(2) };
            using var request = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions")
            {
                Content = new StringContent("""{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4096, "stream": true}""", Encoding.UTF8, "application/json"),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: ", await reader.ReadLineAsync());

            using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            {
                await kill.WaitForExitAsync();
            }

            var events = ServerFeatureTests.Events(await reader.ReadToEndAsync());
            Assert.Equal("[DONE]", events[^1]);

            // Either the answer finished within the grace period or the stream was ended with an error event.
            var last = JsonDocument.Parse(events[^2]).RootElement;
            if (last.TryGetProperty("error", out var error))
            {
                Assert.Equal("server_shutting_down", error.GetProperty("code").GetString());
            }
            else
            {
                Assert.Contains(events, e => e.Contains("\"finish_reason\":\"", StringComparison.Ordinal));
            }

            using var exit = new CancellationTokenSource(TimeSpan.FromMinutes(1));
            await process.WaitForExitAsync(exit.Token);
            Assert.True(process.ExitCode == 0, await stderr + await stdout);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
        }
    }
}
