using Microsoft.Extensions.Logging;

namespace Cobra.AI.Server;

/// <summary>The server's log messages (source-generated).</summary>
internal static partial class ServerLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Debug, Message = "Refused a chat completion with {Status} ({Param}): {Message}")]
    public static partial void Refused(ILogger logger, int status, string? param, string message);

    [LoggerMessage(EventId = 2, Level = LogLevel.Error, Message = "A chat completion failed; the client got a 500 without details")]
    public static partial void Failed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 3, Level = LogLevel.Error, Message = "A chat completion stream failed after it had started; it was ended with an error event")]
    public static partial void StreamFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "The client went away before its chat completion was done")]
    public static partial void ClientGone(ILogger logger);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "Shutting down: new requests get 503; {Running} running requests have {GraceSeconds} s to finish")]
    public static partial void ShuttingDown(ILogger logger, int running, double graceSeconds);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "Shutdown grace period over: ending {Running} running requests")]
    public static partial void GraceOver(ILogger logger, int running);
}
