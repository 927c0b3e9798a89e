using Microsoft.Agents.AI;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;
using Xunit;
using static Cobra.AI.Tests.Routing.RoutingImages;
using MeaiText = Microsoft.Extensions.AI.TextContent;

namespace Cobra.AI.Tests.Routing;

/// <summary>The routed client in a container, under Agent Framework agents and as a Semantic Kernel chat service.</summary>
public sealed class RoutingHostTests : IAsyncLifetime
{
    private static readonly ChatOptions Sixteen = new() { MaxOutputTokens = 16 };
    private CobraChatClient cobra = null!;
    private string direct = null!;

    public async Task InitializeAsync()
    {
        cobra = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" });
        direct = (await cobra.GetResponseAsync([Ask(Question, Scene())], Sixteen)).Text;
    }

    public Task DisposeAsync()
    {
        cobra.Dispose();
        return Task.CompletedTask;
    }

    private static void Tiny(CobraModelOptions o)
    {
        o.ModelPath = Golden.TinyAHub;
        o.Device = "cpu";
    }

    [Fact]
    public async Task The_container_composes_a_keyed_cobra_with_the_main_client()
    {
        var main = new ScriptedMainClient();
        var services = new ServiceCollection();
        services.AddKeyedCobraChatClient(CobraVision.DefaultServiceKey, Tiny);
        services.AddChatClient(main).UseCobraVision();
        using (var provider = services.BuildServiceProvider())
        {
            var client = provider.GetRequiredService<IChatClient>();
            Assert.Equal("main saw: hi", (await client.GetResponseAsync("hi")).Text);
            Assert.Equal(direct, (await client.GetResponseAsync([Ask(Question, Scene())], Sixteen)).Text);
            Assert.Single(main.Calls);
            Assert.Same(provider.GetRequiredKeyedService<IChatClient>(CobraVision.DefaultServiceKey).GetService<CobraChatClient>(), client.GetService<CobraChatClient>());
        }

        Assert.True(main.Disposed);
    }

    [Fact]
    public async Task An_unkeyed_cobra_serves_a_keyed_pipeline_in_describe_mode()
    {
        var main = new ScriptedMainClient();
        var services = new ServiceCollection();
        services.AddCobraChatClient(Tiny);
        services.AddKeyedChatClient("agent", main).UseCobraVision(o => { o.VisionServiceKey = null; o.Mode = CobraVisionMode.Describe; o.DescriptionOptions = Sixteen; });
        using var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredKeyedService<IChatClient>("agent");
        await client.GetResponseAsync([Ask(Question, Scene())]);
        var seen = Assert.Single(main.Calls.Single().Messages);
        Assert.False(HasImage([seen]));
        Assert.Contains(CobraVision.DescriptionPrefix + direct + CobraVision.DescriptionSuffix, seen.Text, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_or_self_referencing_vision_clients_are_refused_clearly()
    {
        var services = new ServiceCollection();
        services.AddChatClient(new ScriptedMainClient()).UseCobraVision();
        using (var provider = services.BuildServiceProvider())
        {
            var error = Assert.Throws<InvalidOperationException>(() => provider.GetRequiredService<IChatClient>());
            Assert.Contains("keyed 'cobra'", error.Message, StringComparison.Ordinal);
        }

        var loop = new ServiceCollection();
        loop.AddChatClient(new ScriptedMainClient()).UseCobraVision(o => o.VisionServiceKey = null);
        using (var provider = loop.BuildServiceProvider())
        {
            var error = Assert.ThrowsAny<InvalidOperationException>(() => provider.GetRequiredService<IChatClient>());
            Assert.Contains("AddKeyedCobraChatClient", error.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Agent_framework_chat_client_agent_calls_tools_on_the_main_model_and_looks_with_cobra()
    {
        int invoked = 0;
        var weather = AIFunctionFactory.Create((string city) => { invoked++; return $"sunny in {city}"; }, "weather");
        var eyes = new RecordingClient(cobra);
        var main = new ScriptedMainClient { CallTools = true };
        using var routed = main.AsBuilder().UseCobraVision(eyes).Build();
        var agent = new ChatClientAgent(routed, null, "assistant", null, [weather], null, null);
        var session = await agent.CreateSessionAsync();

        var text = await agent.RunAsync("What is the weather in Lisbon?", session);
        Assert.Equal("the tool said sunny in Lisbon", text.Text);
        Assert.Equal(1, invoked);
        Assert.Equal(2, main.Calls.Count);
        Assert.Empty(eyes.Calls);

        var look = await agent.RunAsync(Ask(Question, Scene()), session, new ChatClientAgentRunOptions(new ChatOptions { MaxOutputTokens = 16 }));
        Assert.Single(eyes.Calls);
        Assert.Equal(2, main.Calls.Count);
        Assert.False(string.IsNullOrEmpty(look.Text));
        Assert.DoesNotContain("main saw", look.Text, StringComparison.Ordinal);

        var alone = new ChatClientAgent(routed, null, "assistant", null, null, null, null);
        var first = await alone.RunAsync(Ask(Question, Scene()), options: new ChatClientAgentRunOptions(new ChatOptions { MaxOutputTokens = 16 }));
        Assert.Equal(direct, first.Text);
    }

    [Fact]
    public async Task Agent_framework_agent_over_describe_mode_gives_a_text_only_model_the_image_and_its_tools()
    {
        int invoked = 0;
        var weather = AIFunctionFactory.Create((string city) => { invoked++; return $"sunny in {city}"; }, "weather");
        var eyes = new RecordingClient(cobra);
        var main = new ScriptedMainClient { CallTools = true };
        using var routed = main.AsBuilder().UseCobraVision(eyes, o => { o.Mode = CobraVisionMode.Describe; o.DescriptionOptions = Sixteen; }).Build();
        var agent = new ChatClientAgent(routed, "Answer briefly.", "assistant", null, [weather], null, null);

        var answer = await agent.RunAsync(Ask("Is it as sunny as in Lisbon here?", Scene()));
        Assert.Equal("the tool said sunny in Lisbon", answer.Text);
        Assert.Equal(1, invoked);
        Assert.Equal(2, main.Calls.Count);
        Assert.All(main.Calls, c => Assert.False(HasImage(c.Messages)));
        Assert.All(main.Calls, c => Assert.Contains(c.Messages, m => m.Text.Contains(CobraVision.DescriptionPrefix, StringComparison.Ordinal)));
        Assert.Single(eyes.Calls);
    }

    [Fact]
    public async Task Semantic_kernel_chat_service_over_the_routed_client_routes_and_auto_invokes_kernel_functions()
    {
        var builder = Kernel.CreateBuilder();
        builder.AddCobraChatClient(Tiny);
        var main = new ScriptedMainClient { CallTools = true };
        builder.Services.AddChatClient(main).UseCobraVision(o => { o.Mode = CobraVisionMode.Describe; o.DescriptionOptions = Sixteen; });
        builder.Plugins.AddFromFunctions("weather", [KernelFunctionFactory.CreateFromMethod((string city) => $"sunny in {city}", "forecast")]);
        var kernel = builder.Build();

        // What an SK ChatCompletionAgent does with an IChatClient service: a chat completion service with kernel function calling.
        var chat = kernel.GetRequiredService<IChatClient>().AsBuilder().UseKernelFunctionInvocation().Build().AsChatCompletionService(kernel.Services);
        var history = new ChatHistory();
        history.AddUserMessage([new Microsoft.SemanticKernel.TextContent("Is it as sunny as in Lisbon here?"), new ImageContent(Scene().Data, "image/png")]);
        var reply = await chat.GetChatMessageContentAsync(history, new PromptExecutionSettings { FunctionChoiceBehavior = FunctionChoiceBehavior.Auto() }, kernel);
        Assert.Equal("the tool said sunny in Lisbon", reply.Content);
        Assert.All(main.Calls, c => Assert.False(HasImage(c.Messages)));
        var sunny = (await cobra.GetResponseAsync([Ask("Is it as sunny as in Lisbon here?", Scene())], Sixteen)).Text;
        Assert.Contains(main.Calls.First().Messages, m => m.Text.Contains(CobraVision.DescriptionPrefix + sunny + CobraVision.DescriptionSuffix, StringComparison.Ordinal));

        var routeBuilder = Kernel.CreateBuilder();
        routeBuilder.AddCobraChatClient(Tiny);
        var textMain = new ScriptedMainClient();
        routeBuilder.Services.AddChatClient(textMain).UseCobraVision();
        var routeKernel = routeBuilder.Build();
        var service = routeKernel.GetRequiredService<IChatClient>().AsChatCompletionService(routeKernel.Services);
        var look = new ChatHistory();
        look.AddUserMessage([new Microsoft.SemanticKernel.TextContent(Question), new ImageContent(Scene().Data, "image/png")]);
        var seen = await service.GetChatMessageContentAsync(look, new PromptExecutionSettings { ExtensionData = new Dictionary<string, object> { ["max_tokens"] = 16 } });
        Assert.Equal(direct, seen.Content);
        Assert.Empty(textMain.Calls);
        Assert.Equal("main saw: Hello", (await routeKernel.InvokePromptAsync("Hello")).GetValue<string>());
        Assert.Single(textMain.Calls);
    }

    [Fact]
    public async Task Several_agents_share_one_cobra_concurrently()
    {
        var answers = await Task.WhenAll(Enumerable.Range(0, 4).Select(async i =>
        {
            var main = new ScriptedMainClient();
            using var routed = main.AsBuilder().UseCobraVision(cobra, o => { o.Mode = i % 2 == 0 ? CobraVisionMode.Route : CobraVisionMode.Describe; o.DescriptionOptions = Sixteen; }).Build();
            var agent = new ChatClientAgent(routed, null, "a" + i, null, null, null, null);
            var response = await agent.RunAsync(new ChatMessage(ChatRole.User, [new MeaiText(Question), Scene()]), options: new ChatClientAgentRunOptions(new ChatOptions { MaxOutputTokens = 16 }));
            return (i, response.Text, seen: main.Calls.Count);
        }));

        foreach (var (i, text, seen) in answers)
        {
            Assert.Equal(i % 2 == 0 ? direct : "main saw: " + Question + CobraVision.DescriptionPrefix + direct + CobraVision.DescriptionSuffix, text);
            Assert.Equal(i % 2 == 0 ? 0 : 1, seen);
        }
    }
}
