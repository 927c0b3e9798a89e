using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Cobra.AI.Tests.Chat;

/// <summary>
/// A minimal HTTP/1.1 server on 127.0.0.1 (one request per connection) for remote-image tests: each path
/// maps to a status, headers and body; every request it receives is recorded, so a test can prove that a
/// refused URL never reached it.
/// </summary>
internal sealed class LoopbackImageServer : IDisposable
{
    private readonly TcpListener listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource stop = new();
    private readonly Task loop;

    public LoopbackImageServer()
    {
        listener.Start();
        Port = ((IPEndPoint)listener.LocalEndpoint).Port;
        loop = Task.Run(ServeAsync);
    }

    public int Port { get; }

    public string Url(string path) => $"http://127.0.0.1:{Port}{path}";

    /// <summary>path → (status, extra header lines, body).</summary>
    public ConcurrentDictionary<string, (int Status, string Headers, byte[] Body)> Routes { get; } = new();

    /// <summary>Paths requested so far.</summary>
    public ConcurrentQueue<string> Requests { get; } = new();

    public void Dispose()
    {
        stop.Cancel();
        listener.Stop();
        try
        {
            loop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }

        stop.Dispose();
    }

    private async Task ServeAsync()
    {
        while (!stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await listener.AcceptTcpClientAsync(stop.Token);
            }
            catch (Exception) when (stop.IsCancellationRequested)
            {
                return;
            }

            _ = Task.Run(() => HandleAsync(client));
        }
    }

    private async Task HandleAsync(TcpClient client)
    {
        using (client)
        {
            try
            {
                var stream = client.GetStream();
                var head = new StringBuilder();
                var buffer = new byte[1];
                while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal) && head.Length < 16384)
                {
                    if (await stream.ReadAsync(buffer, stop.Token) == 0)
                    {
                        return;
                    }

                    head.Append((char)buffer[0]);
                }

                string path = head.ToString().Split(' ')[1];
                Requests.Enqueue(path);
                var (status, headers, body) = Routes.TryGetValue(path, out var route) ? route : (404, "", Encoding.ASCII.GetBytes("missing"));
                var response = Encoding.ASCII.GetBytes($"HTTP/1.1 {status} Status\r\nContent-Length: {body.Length}\r\nConnection: close\r\n{headers}\r\n");
                await stream.WriteAsync(response, stop.Token);
                await stream.WriteAsync(body, stop.Token);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or SocketException)
            {
            }
        }
    }
}
