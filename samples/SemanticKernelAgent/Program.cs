// A Semantic Kernel agent on another chat model that calls Cobra's vision tool for image questions.
//   brain from an OpenAI-compatible endpoint: OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY
//   without one, Cobra answers alone (the image goes to it directly).
//   dotnet run --project samples/SemanticKernelAgent -- --model-dir tests/fixtures/tiny-a/hub tests/fixtures/tiny-a/images/scene_100x70.png "What is in this picture?"
using System.ClientModel;
using Cobra.AI;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;
using OpenAI;

var positional = args.Where((a, i) => a != "--model-dir" && (i == 0 || args[i - 1] != "--model-dir")).ToList();
string? modelDir = args.SkipWhile(a => a != "--model-dir").Skip(1).FirstOrDefault();
if (positional.Count is < 1 or > 2)
{
    Console.Error.WriteLine("usage: SemanticKernelAgent [--model-dir DIR] IMAGE [QUESTION]");
    return 2;
}

string imagePath = Path.GetFullPath(positional[0]);
string question = positional.Count > 1 ? positional[1] : "What is in this picture?";
var builder = Kernel.CreateBuilder();
builder.AddCobraChatClient(o => { o.ModelPath = modelDir; o.AllowDownload = modelDir is null; });
builder.Services.AddSingleton(new CobraImageReferenceOptions { AllowedRoots = [Path.GetDirectoryName(imagePath)!] });
builder.Plugins.AddCobraVisionPlugin();
var kernel = builder.Build();

if (Environment.GetEnvironmentVariable("OPENAI_BASE_URL") is { } baseUrl)
{
    IChatClient brain = new OpenAIClient(new ApiKeyCredential(Environment.GetEnvironmentVariable("OPENAI_API_KEY") ?? "none"), new OpenAIClientOptions { Endpoint = new Uri(baseUrl) })
        .GetChatClient(Environment.GetEnvironmentVariable("OPENAI_MODEL") ?? "gpt-4o-mini").AsIChatClient()
        .AsBuilder().UseKernelFunctionInvocation().Build();
    var history = new ChatHistory("You can look at images with the vision tool; pass it the image path.");
    history.AddUserMessage($"{question} The image is at {imagePath}.");
    var reply = await brain.AsChatCompletionService(kernel.Services).GetChatMessageContentAsync(history, new PromptExecutionSettings { FunctionChoiceBehavior = FunctionChoiceBehavior.Auto() }, kernel);
    Console.WriteLine(reply.Content);
}
else
{
    // No other model configured: ask Cobra itself through the plugin.
    var result = await kernel.InvokeAsync("vision", "describe_image", new KernelArguments { ["image"] = imagePath, ["question"] = question });
    Console.WriteLine(result.GetValue<string>());
}

return 0;
