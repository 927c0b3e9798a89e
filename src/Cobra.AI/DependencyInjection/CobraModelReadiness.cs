using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Cobra.AI;

/// <summary>Where a registered Cobra model is in its loading.</summary>
public enum CobraModelState
{
    /// <summary>Nothing has asked for the model yet (no host started, no call made).</summary>
    NotStarted,

    /// <summary>Files are being resolved or downloaded, or weights loaded.</summary>
    Loading,

    /// <summary>The model answers calls.</summary>
    Ready,

    /// <summary>Loading failed; <see cref="CobraModelReadiness.Failure"/> says why. Calls throw it.</summary>
    Failed,
}

/// <summary>
/// The readiness of the Cobra model registered with <c>AddCobraChatClient</c>: resolve it from the container
/// (keyed registrations: the same key) to show progress, wait for the model or report health. It is also an
/// <see cref="IHealthCheck"/>: <c>services.AddHealthChecks().AddCheck&lt;CobraModelReadiness&gt;("cobra")</c>
/// gives Degraded while loading, Healthy when ready and Unhealthy with the load exception when it failed.
/// </summary>
public sealed class CobraModelReadiness : IHealthCheck
{
    private readonly CobraChatClientLoader loader;

    internal CobraModelReadiness(CobraChatClientLoader loader) => this.loader = loader;

    /// <summary>The current state.</summary>
    public CobraModelState State => loader.State;

    /// <summary>The last loading stage reported (for example <c>Downloading han1997/cobra/...</c>).</summary>
    public string? Stage => loader.Stage;

    /// <summary>Why loading failed, or null.</summary>
    public Exception? Failure => loader.Failure;

    /// <summary>Starts loading if nothing has yet and waits until the model is ready.</summary>
    /// <param name="cancellationToken">Stops waiting (the load itself goes on).</param>
    /// <returns>A task that completes when the model is ready.</returns>
    /// <exception cref="InvalidOperationException">Loading failed; the inner exception is the cause.</exception>
    public async Task WaitUntilReadyAsync(CancellationToken cancellationToken = default) =>
        await loader.GetClientAsync(cancellationToken).ConfigureAwait(false);

    /// <inheritdoc />
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var result = State switch
        {
            CobraModelState.Ready => HealthCheckResult.Healthy("The Cobra model is loaded."),
            CobraModelState.Failed => HealthCheckResult.Unhealthy("The Cobra model failed to load: " + Failure?.Message, Failure),
            CobraModelState.Loading => HealthCheckResult.Degraded("The Cobra model is loading" + (Stage is { } stage ? $" ({stage})." : ".")),
            _ => HealthCheckResult.Degraded("The Cobra model has not started loading."),
        };
        return Task.FromResult(result);
    }
}
