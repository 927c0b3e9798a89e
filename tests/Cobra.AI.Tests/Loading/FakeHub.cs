using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Cobra.AI.Tests.Loading;

/// <summary>
/// A loopback stand-in for the Hugging Face Hub serving a hub-mirror folder the way the Hub does:
/// <c>/{repo}/resolve/{rev}/{file}</c>; large files answer HEAD with a 302 to <c>/lfs/...</c> carrying
/// X-Linked-Etag (sha256) and X-Linked-Size; small files carry a git-blob-sha1 ETag; X-Repo-Commit everywhere;
/// Range requests honoured. Failures can be injected per file. A second listener on another port (another
/// origin, <see cref="CdnEndpoint"/>) serves the same files, as the Hub's LFS CDN does.
/// </summary>
internal sealed class FakeHub : IDisposable
{
    private readonly string root;
    private readonly HttpListener listener = new();
    private readonly HttpListener cdn = new();
    private readonly Task loop;
    private readonly Task cdnLoop;

    public FakeHub(string root)
    {
        this.root = root;
        Endpoint = Start(listener);
        CdnEndpoint = Start(cdn);
        loop = Task.Run(() => ServeAsync(listener));
        cdnLoop = Task.Run(() => ServeAsync(cdn));
    }

    public string Endpoint { get; }

    /// <summary>Another origin serving the same files (the LFS CDN of "redirect-away").</summary>
    public string CdnEndpoint { get; }

    /// <summary>
    /// file path (repo/file) -> what goes wrong: "cut" (the first transfer stops halfway), "corrupt", "401", "404",
    /// "500" (always, Retry-After: 0), "500-once", "429-once" (Retry-After: 1), "cut-always" (every transfer stops after 64 KiB), "slow", "no-hash" (an ETag that is
    /// no hash), "bad-commit" (X-Repo-Commit with a path in it), "redirect-away" (the LFS redirect goes to <see cref="CdnEndpoint"/>), "moved-once" (a bare 307 to the same path), "no-range-cut" (Range ignored, every transfer stops halfway), "redirect-insecure" (the LFS redirect is plain http to another host).
    /// </summary>
    public ConcurrentDictionary<string, string> Failures { get; } = new();

    public ConcurrentQueue<string> RangeRequests { get; } = new();

    /// <summary>Every request: origin (scheme://host:port), method, path and its Authorization header.</summary>
    public ConcurrentQueue<(string Origin, string Method, string Path, string? Authorization)> Requests { get; } = new();

    private static string Start(HttpListener server)
    {
        for (int attempt = 0; ; attempt++)
        {
            int port;
            using (var probe = new TcpListener(IPAddress.Loopback, 0))
            {
                probe.Start();
                port = ((IPEndPoint)probe.LocalEndpoint).Port;
            }

            string endpoint = $"http://127.0.0.1:{port}";
            server.Prefixes.Clear();
            server.Prefixes.Add(endpoint + "/");
            try
            {
                server.Start();
                return endpoint;
            }
            catch (HttpListenerException) when (attempt < 5)
            {
            }
        }
    }

    public static string Commit(string repo) => Convert.ToHexStringLower(SHA1.HashData(Encoding.UTF8.GetBytes(repo)));

    private static bool IsLfs(string file) => file.EndsWith(".safetensors", StringComparison.Ordinal) || file.EndsWith(".pt", StringComparison.Ordinal) || file.EndsWith(".bin", StringComparison.Ordinal);

    private async Task ServeAsync(HttpListener server)
    {
        while (server.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await server.GetContextAsync();
            }
            catch (Exception) when (!server.IsListening)
            {
                return;
            }
            catch (HttpListenerException)
            {
                return;
            }

            _ = Task.Run(() => Handle(context));
        }
    }

    private async Task Handle(HttpListenerContext context)
    {
        var response = context.Response;
        try
        {
            string path = Uri.UnescapeDataString(context.Request.Url!.AbsolutePath.TrimStart('/'));
            bool lfsDownload = path.StartsWith("lfs/", StringComparison.Ordinal);
            string repo, file;
            if (lfsDownload)
            {
                var parts = path["lfs/".Length..].Split('/', 3);
                (repo, file) = ($"{parts[0]}/{parts[1]}", parts[2]);
            }
            else
            {
                var parts = path.Split('/', 5);                                   // org/name/resolve/rev/file
                (repo, file) = ($"{parts[0]}/{parts[1]}", parts[4]);
            }

            string key = $"{repo}/{file}";
            string local = Path.Combine(root, repo, file);
            Requests.Enqueue(($"{context.Request.Url.Scheme}://{context.Request.Url.Authority}", context.Request.HttpMethod, path, context.Request.Headers["Authorization"]));
            Failures.TryGetValue(key, out var failure);
            if (failure == "moved-once" && !lfsDownload)
            {
                Failures.TryRemove(key, out _);
                response.StatusCode = 307;                                      // a renamed repo: no file headers, just a relative redirect
                response.Headers["Location"] = "/" + string.Join('/', context.Request.Url.AbsolutePath.TrimStart('/').Split('/'));
                response.Close();
                return;
            }

            if (failure is "500-once" or "429-once")
            {
                Failures.TryRemove(key, out _);
                response.StatusCode = failure is "500-once" ? 500 : 429;
                response.Headers["Retry-After"] = failure is "500-once" ? "0" : "1";
                response.Close();
                return;
            }

            if (failure is "401" or "404" or "500" || !File.Exists(local))
            {
                response.StatusCode = failure is "401" ? 401 : failure is "500" ? 500 : 404;
                if (failure is "500")
                {
                    response.Headers["Retry-After"] = "0";
                }

                response.Close();
                return;
            }

            byte[] content = await File.ReadAllBytesAsync(local);
            response.Headers["X-Repo-Commit"] = failure == "bad-commit" ? "../../../escaped" : Commit(repo);
            if (failure == "no-hash")
            {
                response.Headers["ETag"] = "\"not-a-hash-1\"";
            }

            if (!lfsDownload && IsLfs(file))
            {
                response.StatusCode = 302;
                response.Headers["Location"] = failure switch
                {
                    "redirect-away" => $"{CdnEndpoint}/lfs/{repo}/{file}",
                    "redirect-insecure" => $"http://cdn.example.invalid/lfs/{repo}/{file}",
                    _ => $"/lfs/{repo}/{file}",
                };
                response.Headers["X-Linked-Etag"] = failure == "no-hash" ? "\"not-a-hash-1\"" : $"\"{Convert.ToHexStringLower(SHA256.HashData(content))}\"";
                response.Headers["X-Linked-Size"] = content.Length.ToString(System.Globalization.CultureInfo.InvariantCulture);
                response.Close();
                return;
            }

            if (!IsLfs(file) && failure != "no-hash")
            {
                byte[] blob = [.. Encoding.ASCII.GetBytes($"blob {content.Length}\0"), .. content];
                response.Headers["ETag"] = $"\"{Convert.ToHexStringLower(SHA1.HashData(blob))}\"";
            }

            if (context.Request.HttpMethod == "HEAD")
            {
                response.ContentLength64 = content.Length;
                response.Close();
                return;
            }

            if (failure == "corrupt")
            {
                content = content.ToArray();
                content[content.Length / 2] ^= 0xFF;
            }

            long start = 0;
            if (failure != "no-range-cut" && context.Request.Headers["Range"] is { } range && range.StartsWith("bytes=", StringComparison.Ordinal))
            {
                RangeRequests.Enqueue(key);
                start = long.Parse(range["bytes=".Length..].TrimEnd('-').Split('-')[0], System.Globalization.CultureInfo.InvariantCulture);
                response.StatusCode = 206;
                response.Headers["Content-Range"] = $"bytes {start}-{content.Length - 1}/{content.Length}";
            }

            response.ContentLength64 = content.Length - start;
            var body = content.AsMemory((int)start);
            if (failure == "cut-always" && body.Length > 65536)
            {
                // Every transfer of a large file stops after 64 KiB: only resuming again and again completes it.
                await response.OutputStream.WriteAsync(body[..65536]);
                await response.OutputStream.FlushAsync();
                response.Abort();
                return;
            }

            if (failure == "no-range-cut")
            {
                // Ignores Range and stops halfway every time: resuming never gets further.
                await response.OutputStream.WriteAsync(body[..(body.Length / 2)]);
                await response.OutputStream.FlushAsync();
                response.Abort();
                return;
            }

            if (failure == "cut")
            {
                Failures.TryRemove(key, out _);                                  // only the first attempt is cut
                await response.OutputStream.WriteAsync(body[..(body.Length / 2)]);
                await response.OutputStream.FlushAsync();
                response.Abort();
                return;
            }

            if (failure == "slow")
            {
                foreach (var chunk in Enumerable.Range(0, body.Length).Chunk(64))
                {
                    await response.OutputStream.WriteAsync(body.Slice(chunk[0], chunk.Length));
                    await Task.Delay(50);
                }
            }
            else
            {
                await response.OutputStream.WriteAsync(body);
            }

            response.Close();
        }
        catch (Exception)
        {
            try
            {
                response.Abort();
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    public void Dispose()
    {
        listener.Stop();
        listener.Close();
        cdn.Stop();
        cdn.Close();
        try
        {
            Task.WaitAll([loop, cdnLoop], TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
    }
}
