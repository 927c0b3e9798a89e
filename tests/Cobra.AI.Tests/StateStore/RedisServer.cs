using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;
using Xunit;

namespace Cobra.AI.Tests.StateStore;

/// <summary>
/// A real Redis for the state store tests: the one CI starts (<c>COBRA_TEST_REDIS=HOST:PORT</c>, see .ci/run), or,
/// on a developer's machine without it, a <c>redis-server</c> from PATH started on a free loopback port. Neither
/// present is a failure with instructions, never a silent skip. Tests that kill Redis start their own.
/// </summary>
internal sealed class RedisServer : IDisposable
{
    private const string EnvironmentVariable = "COBRA_TEST_REDIS";
    private static readonly Lazy<RedisServer> SharedServer = new(OpenShared);
    private readonly bool owned;
    private Process? process;

    private RedisServer(string host, int port, bool owned)
    {
        Host = host;
        Port = port;
        this.owned = owned;
    }

    /// <summary>The Redis every state store test shares (flushed by <see cref="FlushAsync"/> at each test's start).</summary>
    public static RedisServer Shared => SharedServer.Value;

    public string Host { get; }

    public int Port { get; }

    /// <summary>The address as <see cref="CobraModelOptions.StateStore"/> takes it.</summary>
    public string Address => $"redis://{Host}:{Port}";

    /// <summary>The address as StackExchange.Redis takes it.</summary>
    public string Configuration => $"{Host}:{Port},abortConnect=false,connectTimeout=2000";

    /// <summary>A private redis-server on a free loopback port (stop it, start it again on the same port).</summary>
    public static RedisServer StartPrivate()
    {
        var server = new RedisServer("127.0.0.1", FreePort(), owned: true);
        server.Start();
        return server;
    }

    /// <summary>Starts (again) the private server; returns once it answers.</summary>
    public void Start()
    {
        Assert.True(owned, "only a private redis-server can be started by a test");
        process = Process.Start(new ProcessStartInfo(FindRedisServer(), ["--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", Host, "--save", "", "--appendonly", "no", "--protected-mode", "no"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        WaitUntil(answers: true);
    }

    /// <summary>Kills the private server (no shutdown handshake: an outage); returns once the port is closed.</summary>
    public void Kill()
    {
        Assert.True(owned, "only a private redis-server can be killed by a test");
        if (process is { HasExited: false })
        {
            process.Kill();
            process.WaitForExit();
        }

        process?.Dispose();
        process = null;
        WaitUntil(answers: false);
    }

    /// <summary>Empties every database (tests of one collection run one after another).</summary>
    public async Task FlushAsync()
    {
        await using var connection = await ConnectAsync();
        await connection.GetServer(Host, Port).FlushAllDatabasesAsync();
    }

    /// <summary>A direct connection, for tests that inspect or tamper with stored values (admin: FLUSHALL).</summary>
    public Task<ConnectionMultiplexer> ConnectAsync() => ConnectionMultiplexer.ConnectAsync(Configuration + ",allowAdmin=true");

    public void Dispose()
    {
        if (owned)
        {
            Kill();
        }
    }

    private static RedisServer OpenShared()
    {
        string? configured = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            var endpoint = configured.Trim().Split(':');
            if (endpoint.Length != 2 || !int.TryParse(endpoint[1], out int port))
            {
                throw new InvalidOperationException($"{EnvironmentVariable}='{configured}' is not HOST:PORT.");
            }

            var shared = new RedisServer(endpoint[0], port, owned: false);
            shared.WaitUntil(answers: true);
            return shared;
        }

        var server = StartPrivate();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => server.Dispose();
        return server;
    }

    private static string FindRedisServer()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, OperatingSystem.IsWindows() ? "redis-server.exe" : "redis-server");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new InvalidOperationException(
            $"The state store tests need a real Redis: set {EnvironmentVariable}=HOST:PORT (CI's .ci/run does), or install redis-server on PATH (Debian: apt-get install redis-server) so the tests start their own.");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private void WaitUntil(bool answers)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            if (Answers() == answers)
            {
                return;
            }

            Thread.Sleep(50);
        }

        throw new InvalidOperationException($"Redis at {Host}:{Port} {(answers ? "did not start answering" : "did not stop")} within 20 s.");
    }

    private bool Answers()
    {
        try
        {
            using var client = new TcpClient();
            client.Connect(Host, Port);
            using var stream = client.GetStream();
            stream.Write("PING\r\n"u8);
            var buffer = new byte[7];
            int n = stream.Read(buffer);
            return n > 0 && buffer[0] == (byte)'+';
        }
        catch (SocketException)
        {
            return false;
        }
        catch (IOException)
        {
            return false;
        }
    }
}

/// <summary>Keeps every log line, for assertions on warnings.</summary>
internal sealed class CapturingLoggerFactory : ILoggerFactory, ILoggerProvider
{
    private readonly ConcurrentQueue<(LogLevel Level, string Category, string Message)> entries = new();

    public IReadOnlyList<(LogLevel Level, string Category, string Message)> Entries => [.. entries];

    public int Count(LogLevel level, string contains) => Entries.Count(e => e.Level == level && e.Message.Contains(contains, StringComparison.Ordinal));

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(CapturingLoggerFactory owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.entries.Enqueue((logLevel, category, formatter(state, exception)));
    }
}

/// <summary>The state store tests share one Redis and flush it: they run one after another.</summary>
[CollectionDefinition("redis", DisableParallelization = true)]
public sealed class RedisCollection
{
}
