using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Cobra.AI.Tests.Chat;

public sealed class DependencyInjectionTests
{
    [Fact]
    public async Task AddCobraChatClient_registers_one_client_that_composes_with_middleware_and_is_disposed_with_the_container()
    {
        var services = new ServiceCollection();
        services.AddCobraChatClient(o => { o.ModelPath = Golden.TinyAHub; o.Device = "cpu"; })
                .Use(inner => new CountingChatClient(inner));
        CobraChatClient inner;
        using (var provider = services.BuildServiceProvider())
        {
            var client = provider.GetRequiredService<IChatClient>();
            Assert.Same(client, provider.GetRequiredService<IChatClient>());
            var response = await client.GetResponseAsync("Hello", new ChatOptions { MaxOutputTokens = 3 });
            Assert.Equal(1, ((CountingChatClient)client).Calls);
            Assert.Equal(3, response.Usage!.OutputTokenCount);
            inner = client.GetRequiredService<CobraChatClient>();
        }

        await Assert.ThrowsAsync<ObjectDisposedException>(() => inner.GetResponseAsync("Hello"));
    }

    [Fact]
    public async Task Configuration_section_and_keyed_registration_work()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Cobra:ModelPath"] = Golden.TinyAHub,
            ["Cobra:Device"] = "cpu",
            ["Cobra:ConversationCacheSize"] = "3",
        }).Build();
        var services = new ServiceCollection();
        services.AddKeyedCobraChatClient("vision", configuration.GetSection("Cobra"));
        using var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredKeyedService<IChatClient>("vision");
        Assert.Equal("cobra", client.GetService<ChatClientMetadata>()!.ProviderName);
        Assert.NotEmpty((await client.GetResponseAsync("Hello", new ChatOptions { MaxOutputTokens = 2 })).Messages);
    }

    [Theory]
    [InlineData(" ", 4, false, "ModelPath")]
    [InlineData("x", 0, false, "MaxConcurrentRequests")]
    [InlineData("x", 4, true, "AllowDownload")]                               // download needs the cache, not a folder
    public void Invalid_options_fail_at_registration_naming_the_option(string? path, int concurrency, bool download, string option)
    {
        var services = new ServiceCollection();
        var e = Assert.Throws<ArgumentException>(() => services.AddCobraChatClient(o => { o.ModelPath = path; o.MaxConcurrentRequests = concurrency; o.AllowDownload = download; }));
        Assert.Contains(option, e.Message, StringComparison.Ordinal);
    }

    private sealed class CountingChatClient(IChatClient inner) : DelegatingChatClient(inner)
    {
        public int Calls { get; private set; }

        public override Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            Calls++;
            return base.GetResponseAsync(messages, options, cancellationToken);
        }
    }
}
