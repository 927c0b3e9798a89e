using Cobra.AI.Modeling.Mamba;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Caching.StackExchangeRedis;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using StackExchange.Redis;
using static TorchSharp.torch;

namespace Cobra.AI.Generation.StateStore;

/// <summary>Builds the distributed state store a client's options (or its container) ask for.</summary>
internal static class StateStoreFactory
{
    /// <summary>
    /// The store over <paramref name="injected"/> when given, else over Redis at <see cref="CobraModelOptions.StateStore"/>,
    /// else null (in-process cache only). Computes the model fingerprint (samples the loaded weights);
    /// connects lazily, so a Redis that is down now only means recomputing until it is up.
    /// </summary>
    public static DistributedStateStore? Create(CobraModelOptions options, CobraPipeline pipeline, IDistributedCache? injected, ILogger logger)
    {
        if (injected is null && options.StateStore is null)
        {
            return null;
        }

        var llm = pipeline.Model.LanguageModel;
        var identity = ModelFingerprint.Identity(ModelFingerprint.Compute(pipeline), llm.Config, llm.DType);
        ScalarType stateType;
        using (var probe = MambaState.Zeros(llm.Config, 1, TorchSharp.torch.CPU))
        {
            stateType = probe.Layers[0].Ssm.dtype;                               // fp32 even for bf16 weights
        }

        var codec = new StateSnapshotCodec(identity, llm.Config, stateType, llm.Device, pipeline.ImageTokenCount);
        // Lookups skip prefixes this process wrote (its own cache holds them) only as far as that cache reaches.
        var settings = new StateStoreSettings(options.StateStoreTimeToLive, options.StateStoreMaxSnapshotBytes, options.StateStoreTimeout, RememberedKeys: options.ConversationCacheSize);
        var boundaries = PromptBoundaries.ForZephyr(pipeline.Tokenizer);
        if (injected is not null)
        {
            return new DistributedStateStore(injected, codec, boundaries, settings, logger, injected.GetType().Name);
        }

        var redis = new RedisCache(Options.Create(new RedisCacheOptions { ConfigurationOptions = ToRedisConfiguration(options.StateStore!, options.StateStoreTimeout) }));
        return new DistributedStateStore(redis, codec, boundaries, settings, logger, Describe(options.StateStore!), redis);
    }

    /// <summary>
    /// StackExchange.Redis settings for <c>redis://[[user]:password@]host[:port][/db]</c> (<c>rediss://</c> for TLS):
    /// never aborts on a failed connect (it reconnects in the background) and times out after <paramref name="timeout"/>.
    /// Throws <see cref="ArgumentException"/> naming the option for anything else.
    /// </summary>
    public static ConfigurationOptions ToRedisConfiguration(string address, TimeSpan timeout)
    {
        if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || uri.Scheme is not ("redis" or "rediss") || string.IsNullOrEmpty(uri.Host)
            || uri.Query.Length > 0 || uri.Fragment.Length > 0)
        {
            throw new ArgumentException($"CobraModelOptions.StateStore must be redis://HOST:PORT (optionally redis://[user]:password@HOST:PORT/DB, or rediss:// for TLS), not '{Describe(address)}'.", nameof(CobraModelOptions.StateStore));
        }

        int database = 0;
        string path = uri.AbsolutePath.Trim('/');
        if (path.Length > 0 && !(int.TryParse(path, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out database) && database < 16_384))
        {
            throw new ArgumentException($"CobraModelOptions.StateStore: '/{path}' is not a Redis database number.", nameof(CobraModelOptions.StateStore));
        }

        int ms = (int)Math.Clamp(timeout.TotalMilliseconds, 1, int.MaxValue);
        var config = new ConfigurationOptions
        {
            AbortOnConnectFail = false,
            ConnectTimeout = ms,
            AsyncTimeout = ms,
            SyncTimeout = ms,
            ConnectRetry = 1,
            BacklogPolicy = BacklogPolicy.FailFast,                              // no queueing while disconnected: recompute at once
            Ssl = uri.Scheme == "rediss",
            DefaultDatabase = database,
            ClientName = "cobra",
        };
        config.EndPoints.Add(uri.Host.Trim('[', ']'), uri.IsDefaultPort ? 6379 : uri.Port);
        if (uri.UserInfo.Length > 0)
        {
            string[] parts = uri.UserInfo.Split(':', 2);
            config.User = parts.Length == 2 && parts[0].Length > 0 ? Uri.UnescapeDataString(parts[0]) : null;
            config.Password = Uri.UnescapeDataString(parts.Length == 2 ? parts[1] : parts[0]);
        }

        return config;
    }

    /// <summary>The address without its credentials, for messages and logs.</summary>
    private static string Describe(string address) =>
        Uri.TryCreate(address, UriKind.Absolute, out var uri) && uri.UserInfo.Length > 0 ? address.Replace(uri.UserInfo + "@", "***@", StringComparison.Ordinal) : address;
}
