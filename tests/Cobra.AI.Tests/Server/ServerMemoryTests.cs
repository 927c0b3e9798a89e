using System.Net;
using System.Text;
using Cobra.AI.Server;
using Cobra.AI.Tests.Chat;
using Xunit;

namespace Cobra.AI.Tests.Server;

/// <summary>Server checks that count the process's allocations, so they run alone (see <see cref="ProcessMemoryCollection"/>).</summary>
[Collection(ProcessMemoryCollection.Name)]
public sealed class ServerMemoryTests
{
    [Fact]
    public async Task A_29_MB_body_of_a_million_messages_is_refused_without_materializing_it()
    {
        var (app, url) = await OpenAIEndpointTests.StartAsync(ScriptedChatClient.CobraLike(), new OpenAIServerOptions());
        await using (app)
        {
            byte[] body = Encoding.UTF8.GetBytes("{\"messages\": [" + string.Join(",", Enumerable.Repeat("{\"role\":\"user\",\"content\":\"x\"}", 966_000)) + "]}");
            Assert.InRange(body.Length, 28_000_000, OpenAIServerOptions.KestrelDefaultMaxRequestBytes);
            long before = GC.GetTotalAllocatedBytes();
            using var content = new ByteArrayContent(body);
            content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            using var response = await ServerFeatureTests.Http.PostAsync(url + "/v1/chat/completions", content);
            long allocated = GC.GetTotalAllocatedBytes() - before;
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("'messages' may hold at most 1024", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);

            // The whole array is buffered once as bytes (the serializer doubles its buffer), never as a million objects.
            Assert.True(allocated < 300_000_000, $"{allocated:N0} bytes allocated while refusing the request");
            Assert.Equal(HttpStatusCode.OK, (await ServerFeatureTests.Post(url, ServerFeatureTests.Chat())).Status);
        }
    }
}
