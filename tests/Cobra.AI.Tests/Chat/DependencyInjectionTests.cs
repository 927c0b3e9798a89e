using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
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

    [Fact]
    public async Task With_a_host_the_model_loads_in_the_background_at_start_and_readiness_reports_it()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddCobraChatClient(o => { o.ModelPath = Golden.TinyAHub; o.Device = "cpu"; });
        using var host = builder.Build();
        var readiness = host.Services.GetRequiredService<CobraModelReadiness>();
        Assert.Equal(CobraModelState.NotStarted, readiness.State);
        Assert.Equal(HealthStatus.Degraded, (await readiness.CheckHealthAsync(new HealthCheckContext())).Status);

        await host.StartAsync();                                                 // returns without waiting for the model
        Assert.NotEqual(CobraModelState.NotStarted, readiness.State);
        await readiness.WaitUntilReadyAsync();
        Assert.Equal(CobraModelState.Ready, readiness.State);
        Assert.Equal(HealthStatus.Healthy, (await readiness.CheckHealthAsync(new HealthCheckContext())).Status);
        var client = host.Services.GetRequiredService<IChatClient>();
        Assert.NotNull(client.GetService<CobraChatClient>());
        Assert.Equal(2, (await client.GetResponseAsync("Hello", new ChatOptions { MaxOutputTokens = 2 })).Usage!.OutputTokenCount);
        Assert.Same(readiness, host.Services.GetRequiredService<CobraModelReadiness>());
        await host.StopAsync();
    }

    [Fact]
    public async Task A_failed_load_surfaces_as_a_clear_exception_on_every_call_and_in_health()
    {
        string missing = Path.Combine(Path.GetTempPath(), "cobra-no-such-model-" + Guid.NewGuid().ToString("N"));
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddCobraChatClient(o => { o.ModelPath = missing; o.Device = "cpu"; });
        using var host = builder.Build();
        await host.StartAsync();
        var client = host.Services.GetRequiredService<IChatClient>();
        var first = await Assert.ThrowsAsync<InvalidOperationException>(() => client.GetResponseAsync("Hello"));
        Assert.Contains(missing, first.Message, StringComparison.Ordinal);
        Assert.IsType<DirectoryNotFoundException>(first.InnerException);
        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await foreach (var update in client.GetStreamingResponseAsync("Hello"))
            {
            }
        });

        var readiness = host.Services.GetRequiredService<CobraModelReadiness>();
        Assert.Equal(CobraModelState.Failed, readiness.State);
        var health = await readiness.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, health.Status);
        Assert.Contains(missing, health.Description, StringComparison.Ordinal);
        Assert.IsType<DirectoryNotFoundException>(health.Exception!.InnerException);
        await host.StopAsync();
    }

    [Fact]
    public async Task A_call_waiting_for_the_load_can_be_cancelled_and_the_load_goes_on()
    {
        var services = new ServiceCollection();
        services.AddCobraChatClient(o => { o.ModelPath = Golden.TinyAHub; o.Device = "cpu"; });
        using var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredService<IChatClient>();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetResponseAsync("Hello", cancellationToken: new CancellationToken(canceled: true)));
        var readiness = provider.GetRequiredService<CobraModelReadiness>();
        await readiness.WaitUntilReadyAsync();
        Assert.NotEmpty((await client.GetResponseAsync("Hello", new ChatOptions { MaxOutputTokens = 2 })).Text);
    }

    [Fact]
    public async Task Keyed_registrations_have_their_own_readiness()
    {
        var services = new ServiceCollection();
        services.AddKeyedCobraChatClient("a", o => { o.ModelPath = Golden.TinyAHub; o.Device = "cpu"; });
        using var provider = services.BuildServiceProvider();
        var readiness = provider.GetRequiredKeyedService<CobraModelReadiness>("a");
        Assert.Equal(CobraModelState.NotStarted, readiness.State);
        await provider.GetRequiredKeyedService<IChatClient>("a").GetResponseAsync("Hello", new ChatOptions { MaxOutputTokens = 1 });
        Assert.Equal(CobraModelState.Ready, readiness.State);
    }

    [Fact]
    public void A_state_store_that_is_not_a_redis_address_is_refused_at_registration()
    {
        var e = Assert.Throws<ArgumentException>(() => new ServiceCollection().AddCobraChatClient(o => o.StateStore = "memcached://x"));
        Assert.Contains("StateStore", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("../escape")]
    [InlineData("a/b")]
    public void A_model_id_that_is_not_one_name_is_refused_at_registration(string modelId)
    {
        var e = Assert.Throws<ArgumentException>(() => new ServiceCollection().AddCobraChatClient(o => o.ModelId = modelId));
        Assert.Contains("ModelId", e.Message, StringComparison.Ordinal);
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
