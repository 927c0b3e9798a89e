// Describe an image with Cobra, streaming the answer to the console. By default the real cobra+3b is used from
// the Hugging Face cache, downloaded on first use; --model-dir points at a local hub-mirror folder instead.
//   dotnet run --project samples/DescribeImage -- photo.jpg "What is in this image?"
//   dotnet run --project samples/DescribeImage -- --model-dir tests/fixtures/tiny-a/hub tests/fixtures/tiny-a/images/scene_100x70.png "What is going on in this image?"
using Cobra.AI;
using Microsoft.Extensions.AI;

string? modelDir = null;
var positional = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--model-dir" && i + 1 < args.Length)
    {
        modelDir = args[++i];
    }
    else
    {
        positional.Add(args[i]);
    }
}

if (positional.Count is < 1 or > 2)
{
    Console.Error.WriteLine("usage: DescribeImage [--model-dir DIR] IMAGE [QUESTION]");
    return 2;
}

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };

var progress = new Progress<CobraLoadProgress>(p => Console.Error.Write($"\r{p.Stage}".PadRight(100)));
using IChatClient client = await CobraChatClient.LoadAsync(new CobraModelOptions { ModelPath = modelDir, AllowDownload = modelDir is null }, progress, cancel.Token);
Console.Error.WriteLine();
var image = await DataContent.LoadFromAsync(positional[0], cancellationToken: cancel.Token);
var question = positional.Count > 1 ? positional[1] : "Describe this image.";
ChatMessage message = new(ChatRole.User, [new TextContent(question), new DataContent(image.Data, "image/*")]);

await foreach (var update in client.GetStreamingResponseAsync([message], new ChatOptions { MaxOutputTokens = 256 }, cancel.Token))
{
    Console.Write(update.Text);
    if (update.Contents.OfType<UsageContent>().FirstOrDefault() is { } usage)
    {
        Console.WriteLine();
        Console.Error.WriteLine($"[{update.FinishReason}; {usage.Details.InputTokenCount} input tokens, {usage.Details.OutputTokenCount} output tokens]");
    }
}

return 0;
