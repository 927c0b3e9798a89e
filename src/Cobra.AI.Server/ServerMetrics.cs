using System.Diagnostics.Metrics;

namespace Cobra.AI.Server;

/// <summary>
/// The server's instruments on the <see cref="Meter"/> <c>Cobra.AI.Server</c> (exported at <c>/metrics</c> by
/// <see cref="OpenAIServerHost"/>): requests by status, tokens in / out / from the cache, cache hits, time to the
/// first token, and the requests in flight.
/// </summary>
internal sealed class ServerMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Cobra.AI.Server";

    private readonly Counter<long> requests;
    private readonly Counter<long> inputTokens;
    private readonly Counter<long> outputTokens;
    private readonly Counter<long> cachedTokens;
    private readonly Counter<long> cacheHits;
    private readonly Histogram<double> timeToFirstToken;

    public ServerMetrics(IMeterFactory? factory, Func<int> inFlight)
    {
        // From the host's IMeterFactory, so the meter lives and dies with the host's services.
        var meter = factory?.Create(MeterName) ?? new Meter(MeterName);
        requests = meter.CreateCounter<long>("cobra.server.requests", "{request}", "Chat completion requests answered, by HTTP status.");
        inputTokens = meter.CreateCounter<long>("cobra.server.tokens.input", "{token}", "Prompt tokens of answered requests.");
        outputTokens = meter.CreateCounter<long>("cobra.server.tokens.output", "{token}", "Generated tokens, all choices.");
        cachedTokens = meter.CreateCounter<long>("cobra.server.tokens.cached", "{token}", "Prompt tokens reused from cached state instead of prefilled.");
        cacheHits = meter.CreateCounter<long>("cobra.server.cache.hits", "{request}", "Requests whose prompt reused cached state.");
        timeToFirstToken = meter.CreateHistogram<double>(
            "cobra.server.time_to_first_token",
            "s",
            "From admission (body read and validated) to the first generated text.",
            tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] });
        meter.CreateObservableUpDownCounter("cobra.server.requests.in_flight", inFlight, "{request}", "Admitted requests queued or generating.");
    }

    public void Request(int status) => requests.Add(1, new KeyValuePair<string, object?>("http.response.status_code", status));

    public void FirstToken(TimeSpan elapsed) => timeToFirstToken.Record(elapsed.TotalSeconds);

    public void Tokens(long input, long output, long cached)
    {
        inputTokens.Add(input);
        outputTokens.Add(output);
        cachedTokens.Add(cached);
        if (cached > 0)
        {
            cacheHits.Add(1);
        }
    }
}
