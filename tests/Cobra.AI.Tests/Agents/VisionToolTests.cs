using System.Runtime.CompilerServices;
using Cobra.AI.SemanticKernel;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;
using Xunit;
using FunctionCallContent = Microsoft.Extensions.AI.FunctionCallContent;
using FunctionResultContent = Microsoft.Extensions.AI.FunctionResultContent;
using MeaiText = Microsoft.Extensions.AI.TextContent;

namespace Cobra.AI.Tests.Agents;

/// <summary>Cobra as a vision tool for agents on other models, and as a Semantic Kernel service.</summary>
public sealed class VisionToolTests : IAsyncLifetime, IDisposable
{
    private const string Question = "What is going on in this image?";
    private readonly string root = Directory.CreateTempSubdirectory("cobra-tool-").FullName;
    private CobraChatClient cobra = null!;
    private string expected = null!;

    private static byte[] Png() => File.ReadAllBytes(Golden.Fixtures("tiny-a", "images", "scene_100x70.png"));

    private static string DataUri() => "data:image/png;base64," + Convert.ToBase64String(Png());

    public async Task InitializeAsync()
    {
        cobra = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = Golden.TinyAHub, Device = "cpu" });
        var direct = await cobra.GetResponseAsync([new ChatMessage(ChatRole.User, [new MeaiText(Question), new DataContent(Png(), "image/png")])], new ChatOptions { MaxOutputTokens = 256 });
        expected = CobraVisionTools.UntrustedPrefix + direct.Text;
        File.WriteAllBytes(Path.Combine(root, "scene.png"), Png());
    }

    public Task DisposeAsync()
    {
        cobra.Dispose();
        return Task.CompletedTask;
    }

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public async Task The_tool_answers_like_a_direct_chat_call_for_data_uris_files_and_stored_ids()
    {
        var options = new CobraImageReferenceOptions { AllowedRoots = [root], ImageStore = { ["upload-1"] = new DataContent(Png(), "image/png") } };
        var tool = CobraVisionTools.CreateDescribeImageFunction(cobra, options);
        Assert.Equal(CobraVisionTools.DescribeImageName, tool.Name);
        Assert.Contains("\"image\"", tool.JsonSchema.GetRawText(), StringComparison.Ordinal);
        Assert.Contains("\"question\"", tool.JsonSchema.GetRawText(), StringComparison.Ordinal);
        foreach (var reference in new[] { DataUri(), Path.Combine(root, "scene.png"), "upload-1" })
        {
            var result = await tool.InvokeAsync(new AIFunctionArguments { ["image"] = reference, ["question"] = Question });
            Assert.Equal(expected, result?.ToString());
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("/etc/passwd")]
    [InlineData("http://example.com/cat.png")]
    [InlineData("data:image/png;base64,AAAA")]
    [InlineData("missing-id")]
    public async Task Bad_references_come_back_as_readable_tool_errors(string reference)
    {
        var tool = CobraVisionTools.CreateDescribeImageFunction(cobra, new CobraImageReferenceOptions { AllowedRoots = [root] });
        var result = (await tool.InvokeAsync(new AIFunctionArguments { ["image"] = reference, ["question"] = Question }))?.ToString();
        Assert.StartsWith(CobraVisionTools.ErrorPrefix, result, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_brain_model_calls_the_tool_and_gets_cobras_answer_into_its_final_message()
    {
        var tool = CobraVisionTools.CreateDescribeImageFunction(cobra);
        using var agent = new ScriptedBrain(DataUri()).AsBuilder().UseFunctionInvocation().Build();
        var answer = await agent.GetResponseAsync("What is in the picture I sent?", new ChatOptions { Tools = [tool] });
        Assert.Contains(expected, answer.Text, StringComparison.Ordinal);

        using var failing = new ScriptedBrain("/not/allowed.png").AsBuilder().UseFunctionInvocation().Build();
        var survived = await failing.GetResponseAsync("And this one?", new ChatOptions { Tools = [tool] });
        Assert.Contains(CobraVisionTools.ErrorPrefix, survived.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Agent_framework_chat_client_agents_use_the_tool_and_run_on_cobra()
    {
        var tool = CobraVisionTools.CreateDescribeImageFunction(cobra);
        var agent = new Microsoft.Agents.AI.ChatClientAgent(new ScriptedBrain(DataUri()), "Use the vision tool for images.", "assistant", null, [tool], null, null);
        var response = await agent.RunAsync("What is in the picture I sent?");
        Assert.Contains(expected, response.Text, StringComparison.Ordinal);

        var cobraAgent = new Microsoft.Agents.AI.ChatClientAgent(cobra, null, "cobra", null, null, null, null);
        var direct = await cobraAgent.RunAsync(new ChatMessage(ChatRole.User, [new MeaiText(Question), new DataContent(Png(), "image/png")]),
            options: new Microsoft.Agents.AI.ChatClientAgentRunOptions(new ChatOptions { MaxOutputTokens = 256 }));
        Assert.Equal(expected[CobraVisionTools.UntrustedPrefix.Length..], direct.Text);
    }

    [Fact]
    public async Task Several_agents_share_one_cobra_model_concurrently()
    {
        var tool = CobraVisionTools.CreateDescribeImageFunction(cobra);
        var answers = await Task.WhenAll(Enumerable.Range(0, 4).Select(async _ =>
        {
            using var agent = new ScriptedBrain(DataUri()).AsBuilder().UseFunctionInvocation().Build();
            return (await agent.GetResponseAsync("Look", new ChatOptions { Tools = [tool] })).Text;
        }));
        Assert.All(answers, a => Assert.Contains(expected, a, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Semantic_kernel_finds_the_keyed_client_and_the_plugin()
    {
        var builder = Kernel.CreateBuilder();
        builder.AddCobraChatClient(o => { o.ModelPath = Golden.TinyAHub; o.Device = "cpu"; });
        builder.Plugins.AddCobraVisionPlugin();
        var kernel = builder.Build();

        var function = kernel.Plugins.GetFunction("vision", "describe_image");
        Assert.Equal(["image", "question"], function.Metadata.Parameters.Select(p => p.Name));
        var result = await kernel.InvokeAsync(function, new KernelArguments { ["image"] = DataUri(), ["question"] = Question });
        Assert.Equal(expected, result.GetValue<string>());

        var chat = kernel.Services.GetRequiredKeyedService<IChatClient>("cobra").AsChatCompletionService();
        var history = new ChatHistory();
        history.AddUserMessage([new Microsoft.SemanticKernel.TextContent(Question), new ImageContent(Png(), "image/png")]);
        var reply = await chat.GetChatMessageContentAsync(history, new PromptExecutionSettings { ExtensionData = new Dictionary<string, object> { ["max_tokens"] = 256 } });
        Assert.Equal(expected[CobraVisionTools.UntrustedPrefix.Length..], reply.Content);
    }

    [Fact]
    public async Task Semantic_kernel_auto_function_calling_routes_the_image_question_to_cobra()
    {
        var builder = Kernel.CreateBuilder();
        builder.AddCobraChatClient(o => { o.ModelPath = Golden.TinyAHub; o.Device = "cpu"; });
        builder.Plugins.AddCobraVisionPlugin();
        var kernel = builder.Build();
        var brain = new ScriptedBrain(DataUri()).AsBuilder().UseKernelFunctionInvocation().Build().AsChatCompletionService(kernel.Services);
        var history = new ChatHistory();
        history.AddUserMessage("What is in the picture I sent?");
        var reply = await brain.GetChatMessageContentAsync(history, new PromptExecutionSettings { FunctionChoiceBehavior = FunctionChoiceBehavior.Auto() }, kernel);
        Assert.Contains(expected, reply.Content, StringComparison.Ordinal);
    }

    /// <summary>A stand-in for the agent's main model: asks for the tool once, then reports what it returned.</summary>
    private sealed class ScriptedBrain(string imageReference) : IChatClient
    {
        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            var result = messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().LastOrDefault();
            var reply = result is null
                ? new ChatMessage(ChatRole.Assistant, [new FunctionCallContent("call-1", ToolName(options), new Dictionary<string, object?> { ["image"] = imageReference, ["question"] = Question })])
                : new ChatMessage(ChatRole.Assistant, $"The vision tool says: {result.Result}");
            return Task.FromResult(new ChatResponse(reply));
        }

        /// <summary>The describe-image tool as the framework named it (SK prefixes the plugin name).</summary>
        private static string ToolName(ChatOptions? options) =>
            options?.Tools?.Select(t => t.Name).FirstOrDefault(n => n.EndsWith(CobraVisionTools.DescribeImageName, StringComparison.Ordinal)) ?? CobraVisionTools.DescribeImageName;

        public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            foreach (var update in (await GetResponseAsync(messages, options, cancellationToken)).ToChatResponseUpdates())
            {
                yield return update;
            }
        }

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose()
        {
        }
    }
}
