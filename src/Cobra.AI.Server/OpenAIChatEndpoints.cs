using Cobra.AI.Server;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Microsoft.AspNetCore.Builder;

/// <summary>
/// Maps <c>POST /v1/chat/completions</c>, <c>GET /v1/models</c> and <c>GET /health</c> over the
/// <see cref="IChatClient"/> registered in DI, so any OpenAI client can talk to it by changing its base URL. Errors
/// use OpenAI's error shape: 400 for invalid or unsupported fields (the message and <c>param</c> name the field),
/// 401 for a missing or wrong API key, 404 for an unknown model, 408 for a body not received in time, 413 over the
/// size limits, 429 when too many requests are pending or the engine's queue is full (with Retry-After), 503 while
/// the model is loading or the host is stopping, 500 (logged, without details) for anything else.
/// </summary>
public static class OpenAIChatEndpoints
{
    /// <summary>Maps the endpoints under <c>/v1</c>, plus <c>/health</c> (200 ready, 503 loading or stopping).</summary>
    /// <param name="endpoints">The app's route builder.</param>
    /// <param name="options">Endpoint settings (copied; not modified).</param>
    /// <returns>The <c>/v1</c> route group, for conventions (authorization, rate limiting...).</returns>
    /// <exception cref="ArgumentException">An option is invalid (named in the message).</exception>
    public static RouteGroupBuilder MapOpenAIChatCompletions(this IEndpointRouteBuilder endpoints, OpenAIServerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        var settings = (options ?? new OpenAIServerOptions()).Snapshot();
        settings.Validate();
        var services = endpoints.ServiceProvider;
        var logger = services.GetService<ILoggerFactory>()?.CreateLogger("Cobra.AI.Server") ?? NullLogger.Instance;
        var handler = new ChatCompletionsHandler(settings, logger, services);
        services.GetService<IHostApplicationLifetime>()?.ApplicationStopping.Register(handler.BeginShutdown);
        endpoints.MapGet("/health", (HttpContext context) => handler.HealthAsync(context));
        var group = endpoints.MapGroup("/v1");
        group.MapPost("/chat/completions", (HttpContext context) => handler.HandleAsync(context));
        group.MapGet("/models", (HttpContext context) => handler.ModelsAsync(context));
        return group;
    }
}
