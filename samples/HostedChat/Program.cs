// Cobra behind the Generic Host: options from configuration ("Cobra" section or --Cobra:ModelPath=DIR),
// the client registered with AddCobraChatClient and wrapped in logging and OpenTelemetry middleware.
//   dotnet run --project samples/HostedChat -- --Cobra:ModelPath=tests/fixtures/tiny-a/hub
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

var builder = Host.CreateApplicationBuilder(args);
builder.Services.AddCobraChatClient(builder.Configuration.GetSection("Cobra"))
    .UseLogging()
    .UseOpenTelemetry(sourceName: "HostedChat");

using var host = builder.Build();
var chat = host.Services.GetRequiredService<IChatClient>();
var logger = host.Services.GetRequiredService<ILogger<Program>>();

// Starting the host starts loading the model in the background; readiness (also a health check) tracks it.
await host.StartAsync();
var readiness = host.Services.GetRequiredService<Cobra.AI.CobraModelReadiness>();
logger.LogInformation("Model {State}; the first call waits for it", readiness.State);

List<ChatMessage> history = [];
foreach (var question in new[] { "Write a short story about a cobra.", "Make it shorter." })
{
    history.Add(new ChatMessage(ChatRole.User, question));
    var response = await chat.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 32 });
    history.AddMessages(response);
    logger.LogInformation("Q: {Question} A: {Answer} (cached input tokens: {Cached})", question, response.Text, response.Usage?.CachedInputTokenCount);
}

await host.StopAsync();
return 0;
