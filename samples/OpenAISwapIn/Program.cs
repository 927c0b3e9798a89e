// The same code talks to a cloud OpenAI endpoint or to a local `cobra serve`: only the base URL and model change.
//   cloud: OPENAI_API_KEY=sk-... dotnet run --project samples/OpenAISwapIn -- photo.jpg
//   local: cobra serve --model-dir tests/fixtures/tiny-a/hub --urls http://127.0.0.1:8000
//          OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_MODEL=cobra+3b dotnet run --project samples/OpenAISwapIn -- photo.jpg
using System.ClientModel;
using Microsoft.Extensions.AI;
using OpenAI;

if (args.Length is < 1 or > 2)
{
    Console.Error.WriteLine("usage: OpenAISwapIn IMAGE [QUESTION]   (OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY)");
    return 2;
}

var endpoint = new Uri(Environment.GetEnvironmentVariable("OPENAI_BASE_URL") ?? "https://api.openai.com/v1");
string model = Environment.GetEnvironmentVariable("OPENAI_MODEL") ?? "gpt-4o-mini";
string key = Environment.GetEnvironmentVariable("OPENAI_API_KEY") ?? "not-needed-locally";

IChatClient chat = new OpenAIClient(new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = endpoint })
    .GetChatClient(model)
    .AsIChatClient();

var image = await DataContent.LoadFromAsync(args[0]);
ChatMessage question = new(ChatRole.User, [new TextContent(args.Length > 1 ? args[1] : "Describe this image."), new DataContent(image.Data, image.MediaType)]);
await foreach (var update in chat.GetStreamingResponseAsync([question], new ChatOptions { MaxOutputTokens = 200 }))
{
    Console.Write(update.Text);
}

Console.WriteLine();
return 0;
