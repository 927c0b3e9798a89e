using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace Cobra.AI.Routing;

#pragma warning disable MEAI001 // Built on the abstractions' experimental RoutingChatClient, as issue 16 asks; see CobraVision.ExperimentalDiagnosticId.

/// <summary>
/// Route mode: each request goes either to Cobra, as the caller sent it (when <paramref name="needsVision"/> says
/// so), or to the main client, with image parts replaced by <see cref="CobraVision.OmittedImageText"/> unless
/// <paramref name="keepImages"/>. Options, cancellation and errors pass through <see cref="RoutingChatClient"/>
/// unchanged, so a refused image fails exactly as a direct call to Cobra would. Owns the main client (the
/// builder's inner client), not Cobra.
/// </summary>
internal sealed partial class CobraVisionRoutingChatClient(IChatClient main, IChatClient vision, Func<RoutingContext, bool> needsVision, bool keepImages, ILogger logger) : RoutingChatClient
{
    private readonly EyesChatClient eyes = new(vision);
    private readonly IChatClient mainView = keepImages ? main : new ImageOmittingChatClient(main);

    protected override ValueTask<IChatClient> SelectClientAsync(RoutingContext context, CancellationToken cancellationToken)
    {
        bool toVision = needsVision(context);
        LogRouted(logger, toVision ? "Cobra" : "the main client");
        return ValueTask.FromResult(toVision ? eyes : mainView);
    }

    /// <summary>This client, then the main client's services, then Cobra's (e.g. <see cref="CobraChatClient"/> itself).</summary>
    public override object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        return serviceKey is null && serviceType.IsInstanceOfType(this) ? this
            : main.GetService(serviceType, serviceKey) ?? vision.GetService(serviceType, serviceKey);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            main.Dispose();
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Routed the request to {Route}")]
    private static partial void LogRouted(ILogger logger, string route);
}
