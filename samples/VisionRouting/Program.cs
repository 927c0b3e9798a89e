// Cobra as the eyes of another chat model: turns with an image go to Cobra (route), or Cobra describes the image
// to the main model (describe); every other turn goes to the main model untouched.
//   main model from an OpenAI-compatible endpoint: OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY
//   without one, a scripted text-only stand-in answers and shows what it was sent.
//   dotnet run --project samples/VisionRouting -- --model-dir tests/fixtures/tiny-a/hub --mode describe tests/fixtures/tiny-a/images/scene_100x70.png "What is in this picture?"
using System.ClientModel;
using System.Runtime.CompilerServices;
using Cobra.AI;
using Microsoft.Extensions.AI;
using OpenAI;

string? Option(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
var positional = args.Where((a, i) => !a.StartsWith("--", StringComparison.Ordinal) && (i == 0 || !args[i - 1].StartsWith("--", StringComparison.Ordinal))).ToList();
string? modelDir = Option("--model-dir");
string modeName = Option("--mode") ?? "route";
if (positional.Count is < 1 or > 2 || modeName is not ("route" or "describe"))
{
    Console.Error.WriteLine("usage: VisionRouting [--model-dir DIR] [--mode route|describe] IMAGE [QUESTION]");
    return 2;
}

var mode = modeName == "route" ? CobraVisionMode.Route : CobraVisionMode.Describe;
byte[] image = File.ReadAllBytes(positional[0]);
string question = positional.Count > 1 ? positional[1] : "What is in this picture?";

using var cobra = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = modelDir, AllowDownload = modelDir is null });
IChatClient main = Environment.GetEnvironmentVariable("OPENAI_BASE_URL") is { } baseUrl
    ? new OpenAIClient(new ApiKeyCredential(Environment.GetEnvironmentVariable("OPENAI_API_KEY") ?? "none"), new OpenAIClientOptions { Endpoint = new Uri(baseUrl) })
        .GetChatClient(Environment.GetEnvironmentVariable("OPENAI_MODEL") ?? "gpt-4o-mini").AsIChatClient()
    : new TextOnlyStandIn();

using IChatClient chat = main.AsBuilder()
    .UseCobraVision(cobra, o =>
    {
        o.Mode = mode;
        o.DescriptionOptions = new ChatOptions { MaxOutputTokens = 128 };
    })
    .Build();

List<ChatMessage> history = [];
async Task Turn(ChatMessage message)
{
    history.Add(message);
    var response = await chat.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 128 });
    history.AddRange(response.Messages);
    var usage = response.Usage;
    long? vision = usage?.AdditionalCounts?.GetValueOrDefault(CobraVision.VisionInputTokensKey);
    Console.WriteLine($"> {message.Text}{(message.Contents.Any(c => c is DataContent) ? " [+ image]" : "")}");
    Console.WriteLine($"  {response.ModelId ?? "?"}: {response.Text}");
    Console.WriteLine(usage is null ? "  usage: not reported" : $"  usage: {usage.InputTokenCount} in, {usage.OutputTokenCount} out{(vision is null ? "" : $" (Cobra's part: {vision} in)")}");
}

await Turn(new ChatMessage(ChatRole.User, "Hello! I will show you a picture."));
await Turn(new ChatMessage(ChatRole.User, [new TextContent(question), new DataContent(image, "image/*")]));
await Turn(new ChatMessage(ChatRole.User, "Thanks. Summarise our conversation in one sentence."));
return 0;

/// <summary>A main model that cannot see: refuses images, and answers by quoting what it was sent.</summary>
internal sealed class TextOnlyStandIn : IChatClient
{
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var last = messages.Last(m => m.Role == ChatRole.User);
        if (messages.SelectMany(m => m.Contents).Any(c => c is DataContent or UriContent))
        {
            return Task.FromResult(new ChatResponse(new ChatMessage(ChatRole.Assistant, "(I cannot see images; the history I was sent carries one.)")) { ModelId = "text-only" });
        }

        return Task.FromResult(new ChatResponse(new ChatMessage(ChatRole.Assistant, $"You said: \"{last.Text}\"")) { ModelId = "text-only" });
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        foreach (var update in (await GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false)).ToChatResponseUpdates())
        {
            yield return update;
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null) => null;

    public void Dispose()
    {
    }
}
