using System.Text.Json;
using System.Text.Json.Nodes;
using Cobra.AI.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace Microsoft.AspNetCore.Builder;

/// <summary>
/// Maps <c>POST /v1/chat/completions</c> and <c>GET /v1/models</c> over the <see cref="IChatClient"/> registered in
/// DI, so any OpenAI client can talk to it by changing its base URL. Errors use OpenAI's error shape: 400 for
/// malformed requests and bad images, 401 for a missing or wrong API key, 404 for an unknown model, 413 over the
/// size limits, 429 when too many requests are pending (with Retry-After), 503 while the model is loading.
/// </summary>
public static class OpenAIChatEndpoints
{
    /// <summary>Maps the endpoints under <c>/v1</c>.</summary>
    /// <param name="endpoints">The app's route builder.</param>
    /// <param name="options">Endpoint settings (not modified).</param>
    /// <returns>The route group, for conventions (authorization, rate limiting...).</returns>
    public static RouteGroupBuilder MapOpenAIChatCompletions(this IEndpointRouteBuilder endpoints, OpenAIServerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        var settings = options ?? new OpenAIServerOptions();
        var handler = new ChatCompletionsHandler(settings);
        var group = endpoints.MapGroup("/v1");
        group.MapPost("/chat/completions", (HttpContext context) => handler.HandleAsync(context));
        group.MapGet("/models", (HttpContext context) => handler.ModelsAsync(context));
        return group;
    }
}
