// A Microsoft Agent Framework agent on another chat model that calls Cobra's vision tool for image questions.
//   brain from an OpenAI-compatible endpoint: OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY
//   without one, the agent runs on Cobra itself with the image attached.
//   dotnet run --project samples/AgentFramework -- --model-dir tests/fixtures/tiny-a/hub tests/fixtures/tiny-a/images/scene_100x70.png "What is in this picture?"
using System.ClientModel;
using Cobra.AI;
using Microsoft.Agents.AI;
using Microsoft.Extensions.AI;
using OpenAI;

var positional = args.Where((a, i) => a != "--model-dir" && (i == 0 || args[i - 1] != "--model-dir")).ToList();
string? modelDir = args.SkipWhile(a => a != "--model-dir").Skip(1).FirstOrDefault();
if (positional.Count is < 1 or > 2)
{
    Console.Error.WriteLine("usage: AgentFramework [--model-dir DIR] IMAGE [QUESTION]");
    return 2;
}

string imagePath = Path.GetFullPath(positional[0]);
string question = positional.Count > 1 ? positional[1] : "What is in this picture?";
using var cobra = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = modelDir, AllowDownload = modelDir is null });
var tool = CobraVisionTools.CreateDescribeImageFunction(cobra, new CobraImageReferenceOptions { AllowedRoots = [Path.GetDirectoryName(imagePath)!] });

if (Environment.GetEnvironmentVariable("OPENAI_BASE_URL") is { } baseUrl)
{
    IChatClient brain = new OpenAIClient(new ApiKeyCredential(Environment.GetEnvironmentVariable("OPENAI_API_KEY") ?? "none"), new OpenAIClientOptions { Endpoint = new Uri(baseUrl) })
        .GetChatClient(Environment.GetEnvironmentVariable("OPENAI_MODEL") ?? "gpt-4o-mini").AsIChatClient();
    var agent = new ChatClientAgent(brain, "You can look at images with the describe_image tool; pass it the image path.", "assistant", null, [tool], null, null);
    Console.WriteLine((await agent.RunAsync($"{question} The image is at {imagePath}.")).Text);
}
else
{
    var agent = new ChatClientAgent(cobra, null, "cobra", null, null, null, null);
    var message = new ChatMessage(ChatRole.User, [new TextContent(question), new DataContent(File.ReadAllBytes(imagePath), "image/*")]);
    Console.WriteLine((await agent.RunAsync(message)).Text);
}

return 0;
