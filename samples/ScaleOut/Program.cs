// A round-robin YARP reverse proxy in front of several `cobra serve --state-store redis://...` replicas.
// Usage: dotnet run --project samples/ScaleOut -- --urls http://127.0.0.1:8000 --replicas http://127.0.0.1:8001,http://127.0.0.1:8002
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.LoadBalancing;

var builder = WebApplication.CreateSlimBuilder(args);
string[] replicas = (builder.Configuration["replicas"] ?? "http://127.0.0.1:8001,http://127.0.0.1:8002")
    .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
if (replicas.Length == 0 || replicas.Any(r => !Uri.TryCreate(r, UriKind.Absolute, out _)))
{
    Console.Error.WriteLine("--replicas must be a comma-separated list of absolute URLs, e.g. http://127.0.0.1:8001,http://127.0.0.1:8002");
    return 2;
}

builder.Services.AddReverseProxy().LoadFromMemory(
    [new RouteConfig { RouteId = "openai", ClusterId = "cobra", Match = new RouteMatch { Path = "{**catch-all}" } }],
    [new ClusterConfig
    {
        ClusterId = "cobra",

        // Round robin on purpose: consecutive turns of one conversation land on different replicas, and the
        // conversation state shared through Redis is what keeps the second one from recomputing everything.
        LoadBalancingPolicy = LoadBalancingPolicies.RoundRobin,
        Destinations = replicas.Select((url, i) => (url, i)).ToDictionary(r => $"replica{r.i + 1}", r => new DestinationConfig { Address = r.url }),
        HttpRequest = new Yarp.ReverseProxy.Forwarder.ForwarderRequestConfig { ActivityTimeout = TimeSpan.FromMinutes(10) },
    }]);

var app = builder.Build();
app.MapReverseProxy();
app.Logger.LogInformation("Proxying {Urls} round-robin to {Replicas}", string.Join(";", app.Urls), string.Join(", ", replicas));
await app.RunAsync();
return 0;
