using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;

namespace Cobra.AI.Loading;

/// <summary>Bytes received for one file.</summary>
/// <param name="Repo">Repo id.</param>
/// <param name="File">File name in the repo.</param>
/// <param name="Bytes">Bytes on disk so far.</param>
/// <param name="Total">Expected size, when known.</param>
internal sealed record DownloadProgress(string Repo, string File, long Bytes, long? Total);

/// <summary>
/// How failed transfers are retried within one call. A failure is a cut connection, a timeout, a 5xx or a 429;
/// an attempt that received bytes resets the count (it resumes with a Range request at once), and
/// <see cref="MaxAttempts"/> failures in a row without progress give up with a clear error.
/// </summary>
/// <param name="MaxAttempts">Consecutive failed attempts (without progress) before giving up.</param>
/// <param name="BaseDelay">Wait before the first retry; doubled for each further one.</param>
/// <param name="MaxDelay">Longest computed wait.</param>
/// <param name="MaxRetryAfter">Longest wait a server's <c>Retry-After</c> is honoured for.</param>
/// <param name="StallTimeout">A transfer that receives nothing for this long counts as cut.</param>
internal sealed record DownloadRetryPolicy(int MaxAttempts, TimeSpan BaseDelay, TimeSpan MaxDelay, TimeSpan MaxRetryAfter, TimeSpan StallTimeout)
{
    /// <summary>5 attempts, 1 s doubling to at most 30 s; <c>Retry-After</c> honoured up to 5 minutes; 60 s without bytes is a cut.</summary>
    public static DownloadRetryPolicy Default { get; } = new(5, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(60));

    /// <summary>The wait before retry number <paramref name="failures"/> (1-based).</summary>
    public TimeSpan Delay(int failures, TimeSpan? retryAfter, bool madeProgress)
    {
        if (retryAfter is { } asked)
        {
            return asked < TimeSpan.Zero ? TimeSpan.Zero : asked > MaxRetryAfter ? MaxRetryAfter : asked;
        }

        if (madeProgress)
        {
            return TimeSpan.Zero;
        }

        double ms = BaseDelay.TotalMilliseconds * Math.Pow(2, Math.Min(failures - 1, 30));
        return TimeSpan.FromMilliseconds(Math.Min(ms, MaxDelay.TotalMilliseconds));
    }
}

/// <summary>
/// Fetches files over the Hugging Face Hub HTTP API into the hub cache layout Python's <c>huggingface_hub</c>
/// uses (<c>models--org--repo/blobs/&lt;etag&gt;</c>, <c>snapshots/&lt;commit&gt;/&lt;file&gt;</c> linking to the blob,
/// <c>refs/&lt;revision&gt;</c>), so both can share it.
/// <list type="bullet">
/// <item>Transfers are retried within the call (<see cref="DownloadRetryPolicy"/>) and resume from
/// <c>&lt;blob&gt;.incomplete</c> with a Range request; a later call resumes too.</item>
/// <item>Every blob is verified before an atomic rename: size, then sha256 (the LFS ETag) or git's blob sha1
/// (a small file's ETag); when the hub gives no hash, <see cref="Warnings"/> says that only the size was checked.</item>
/// <item>The token goes only to the endpoint's origin: redirects (the LFS CDN) to another origin get no
/// <c>Authorization</c>; every URL must be https unless it is a loopback address.</item>
/// <item>Repo ids, revisions, file names, commits and ETags are validated and every path is checked to lie in the cache.</item>
/// <item>A full disk is detected before and during the transfer: a clear error and no partial blob left.</item>
/// <item>A lock file serialises processes fetching the same blob; a cached blob that no longer matches is fetched again.</item>
/// </list>
/// </summary>
internal sealed class HubDownloader
{
    private const int MaxRedirects = 5;
    private readonly HttpClient http;
    private readonly Uri endpoint;
    private readonly string cacheRoot;
    private readonly string? token;
    private readonly DownloadRetryPolicy retry;
    private readonly Func<string, bool, Stream> openPartial;
    private readonly List<string> warnings = [];

    /// <summary>Uses <paramref name="http"/> (which must not follow redirects itself) against <paramref name="endpoint"/>.</summary>
    /// <param name="http">The client; its handler must have <c>AllowAutoRedirect = false</c> so the token never follows a redirect.</param>
    /// <param name="endpoint">The hub, https (http only for loopback).</param>
    /// <param name="cacheRoot">The Hugging Face cache root.</param>
    /// <param name="token">Bearer token for the endpoint's origin, or null.</param>
    /// <param name="retry">Retry policy; null uses <see cref="DownloadRetryPolicy.Default"/>.</param>
    /// <param name="openPartial">Opens the partial file (path, append); tests inject write failures here.</param>
    public HubDownloader(HttpClient http, string endpoint, string cacheRoot, string? token, DownloadRetryPolicy? retry = null, Func<string, bool, Stream>? openPartial = null)
    {
        this.http = http;
        this.endpoint = Uri.TryCreate(endpoint.TrimEnd('/'), UriKind.Absolute, out var uri)
            ? RequireSecure(uri, "HF_ENDPOINT")
            : throw new ArgumentException($"Hub endpoint '{endpoint}' is not an absolute URL.", nameof(endpoint));
        this.cacheRoot = Path.GetFullPath(cacheRoot);
        this.token = string.IsNullOrEmpty(token) ? null : token;
        this.retry = retry ?? DownloadRetryPolicy.Default;
        this.openPartial = openPartial ?? ((path, append) => new FileStream(path, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous));
    }

    /// <summary>The endpoint from <c>HF_ENDPOINT</c>, else the public Hub.</summary>
    public static string DefaultEndpoint() =>
        (Environment.GetEnvironmentVariable("HF_ENDPOINT") is { Length: > 0 } e ? e : "https://huggingface.co").TrimEnd('/');

    /// <summary>How many blobs that were in the cache failed verification and were fetched again.</summary>
    public int RepairedFiles { get; private set; }

    /// <summary>What could not be checked as strongly as wanted (files verified by size only).</summary>
    public IReadOnlyList<string> Warnings => warnings;

    /// <summary>
    /// Makes <paramref name="file"/> of <paramref name="repo"/> at <paramref name="revision"/> present and verified in
    /// the cache; returns its snapshot path, or null when the hub has no such file and it is not required.
    /// </summary>
    public async Task<string?> FetchAsync(string repo, string file, string revision, bool required, IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        HubNames.ValidateRepoId(repo);
        HubNames.ValidateFilePath(file);
        HubNames.ValidateRevision(revision);
        string what = $"{repo}/{file}";
        string escapedFile = string.Join('/', file.Split('/').Select(Uri.EscapeDataString));
        var url = new Uri($"{endpoint.AbsoluteUri.TrimEnd('/')}/{repo}/resolve/{Uri.EscapeDataString(revision)}/{escapedFile}");
        var meta = await WithRetriesAsync(what, null, () => HeadAsync(url, what, cancellationToken), cancellationToken).ConfigureAwait(false);
        if (meta is null)
        {
            return required ? throw new FileNotFoundException($"{what}: not found on the hub ({url}).", what) : null;
        }

        string repoDir = HubNames.Inside(cacheRoot, Path.Combine(cacheRoot, "models--" + repo.Replace("/", "--", StringComparison.Ordinal)));
        string blob = HubNames.Inside(repoDir, Path.Combine(repoDir, "blobs", meta.ETag));
        string snapshot = HubNames.Inside(repoDir, Path.Combine(repoDir, "snapshots", meta.Commit, file));
        string reference = HubNames.Inside(repoDir, Path.Combine(repoDir, "refs", revision));
        if (meta.Hash == HashKind.None)
        {
            warnings.Add($"{what}: the hub gave no sha256 or git hash (ETag '{meta.ETag}'), so only its size{(meta.Size is null ? " (unknown)" : "")} could be checked.");
        }

        try
        {
            return await StoreAsync(meta, blob, snapshot, reference, revision, repo, file, progress, cancellationToken).ConfigureAwait(false);
        }
        catch (IOException e) when (e is not DiskFullException && IsDiskFull(e))
        {
            throw DiskFull(what, repoDir, meta.Size, e);
        }
    }

    private async Task<string> StoreAsync(FileMeta meta, string blob, string snapshot, string reference, string revision, string repo, string file, IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        await using (var gate = await LockAsync(blob + ".lock", cancellationToken).ConfigureAwait(false))
        {
            if (File.Exists(blob) && !await VerifiesAsync(blob, meta, cancellationToken).ConfigureAwait(false))
            {
                File.Delete(blob);                                               // corrupted cache entry
                RepairedFiles++;
            }

            if (!File.Exists(blob))
            {
                await DownloadAsync(meta, blob, repo, file, progress, cancellationToken).ConfigureAwait(false);
            }
        }

        progress?.Report(new DownloadProgress(repo, file, meta.Size ?? new FileInfo(blob).Length, meta.Size));
        LinkSnapshot(snapshot, blob);
        if (!string.Equals(revision, meta.Commit, StringComparison.Ordinal))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(reference)!);
            await File.WriteAllTextAsync(reference, meta.Commit, cancellationToken).ConfigureAwait(false);
        }

        return snapshot;
    }

    private enum HashKind
    {
        None,
        Sha256,
        GitSha1,
    }

    private sealed record FileMeta(Uri Location, string ETag, HashKind Hash, long? Size, string Commit);

    /// <summary>A failure worth retrying, with the server's <c>Retry-After</c> when it gave one.</summary>
    private sealed class TransientException(string message, TimeSpan? retryAfter, bool madeProgress, Exception? inner = null) : IOException(message, inner)
    {
        public TimeSpan? RetryAfter { get; } = retryAfter;

        public bool MadeProgress { get; } = madeProgress;
    }

    /// <summary>A full disk: reported as is, never retried.</summary>
    private sealed class DiskFullException(string message, Exception? inner) : IOException(message, inner);

    /// <summary>Runs <paramref name="attempt"/> until it succeeds, fails for good, or fails <see cref="DownloadRetryPolicy.MaxAttempts"/> times in a row without progress.</summary>
    private async Task<T> WithRetriesAsync<T>(string what, string? partial, Func<Task<T>> attempt, CancellationToken cancellationToken)
    {
        int failures = 0;
        while (true)
        {
            try
            {
                return await attempt().ConfigureAwait(false);
            }
            catch (TransientException e)
            {
                failures = e.MadeProgress ? 1 : failures + 1;
                if (failures >= retry.MaxAttempts)
                {
                    string kept = partial is not null && File.Exists(partial) ? $"; the {new FileInfo(partial).Length} bytes received are kept and the next run resumes from them" : "";
                    throw new IOException($"{what}: {e.Message} ({failures} attempts in a row failed); try again later{kept}.", e);
                }

                await Task.Delay(retry.Delay(failures, e.RetryAfter, e.MadeProgress), cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// HEAD without following the LFS redirect: the hub puts the LFS sha256 and size on the redirect itself. A
    /// redirect without them (a renamed repo) is followed, by hand, like every other.
    /// </summary>
    private async Task<FileMeta?> HeadAsync(Uri url, string what, CancellationToken cancellationToken)
    {
        for (int hop = 0; ; hop++)
        {
            using var request = Request(HttpMethod.Head, url);
            using var response = await SendAsync(request, cancellationToken).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                return null;
            }

            ThrowOnError(response, what, allowRedirect: true);
            string? etag = Header(response, "X-Linked-Etag") ?? response.Headers.ETag?.Tag ?? Header(response, "ETag");
            string? commit = Header(response, "X-Repo-Commit");
            if ((etag is null || commit is null) && (int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is { } moved)
            {
                url = hop < MaxRedirects ? Resolve(url, moved) : throw new InvalidDataException($"{what}: more than {MaxRedirects} redirects.");
                continue;
            }

            return ReadMeta(response, url, etag, commit, what);
        }
    }

    private static FileMeta ReadMeta(HttpResponseMessage response, Uri url, string? etag, string? commit, string what)
    {
        if (etag is null || commit is null)
        {
            throw new InvalidDataException($"{what}: the hub's answer lacks an ETag or X-Repo-Commit header ({url}).");
        }

        etag = HubNames.ValidateETag(etag.Replace("W/", "", StringComparison.Ordinal).Trim('"'), what);
        commit = HubNames.ValidateCommit(commit, what);
        string lower = etag.ToLowerInvariant();
        var hash = lower.All(Uri.IsHexDigit) ? lower.Length switch { 64 => HashKind.Sha256, 40 => HashKind.GitSha1, _ => HashKind.None } : HashKind.None;
        long? size = long.TryParse(Header(response, "X-Linked-Size"), NumberStyles.None, CultureInfo.InvariantCulture, out long linked) ? linked : response.Content.Headers.ContentLength;
        var location = (int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is { } next ? Resolve(url, next) : url;
        return new FileMeta(location, hash == HashKind.None ? etag : lower, hash, size, commit);
    }

    private async Task DownloadAsync(FileMeta meta, string blob, string repo, string file, IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        string what = $"{repo}/{file}";
        string partial = blob + ".incomplete";
        try
        {
            await WithRetriesAsync(what, partial, () => TransferAsync(meta, partial, repo, file, progress, cancellationToken), cancellationToken).ConfigureAwait(false);
        }
        catch (IOException e) when (e is not DiskFullException && IsDiskFull(e))
        {
            TryDelete(partial);
            throw DiskFull(what, Path.GetDirectoryName(blob)!, meta.Size, e);
        }

        if (!await VerifiesAsync(partial, meta, cancellationToken).ConfigureAwait(false))
        {
            TryDelete(partial);
            throw new InvalidDataException($"{what}: the downloaded bytes do not match the hub's size/hash (ETag {meta.ETag}); nothing was kept.");
        }

        File.Move(partial, blob, overwrite: true);
    }

    /// <summary>One attempt: a GET from where the partial file ends, following redirects by hand.</summary>
    private async Task<bool> TransferAsync(FileMeta meta, string partial, string repo, string file, IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        string what = $"{repo}/{file}";
        long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        if (meta.Size is long expected && have > expected)
        {
            have = 0;                                                            // not a prefix of this blob
        }

        if (meta.Size is long total && total - have > 0)
        {
            EnsureSpace(what, Path.GetDirectoryName(partial)!, total - have, partial);
        }

        var url = meta.Location;
        for (int hop = 0; ; hop++)
        {
            using var request = Request(HttpMethod.Get, url);
            if (have > 0)
            {
                request.Headers.Range = new RangeHeaderValue(have, null);
            }

            using var response = await SendAsync(request, cancellationToken).ConfigureAwait(false);
            if ((int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is { } next)
            {
                url = hop < MaxRedirects ? Resolve(url, next) : throw new InvalidDataException($"{what}: more than {MaxRedirects} redirects.");
                continue;
            }

            if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && have > 0)
            {
                TryDelete(partial);                                              // our partial file is not a prefix: start over
                throw new TransientException("the server refused to resume (416)", TimeSpan.Zero, madeProgress: false);
            }

            ThrowOnError(response, what, allowRedirect: false);
            bool resumed = response.StatusCode == HttpStatusCode.PartialContent && response.Content.Headers.ContentRange?.From == have;
            long written = resumed ? have : 0;
            // Progress means more bytes on disk than before this attempt: a server that ignores Range and is cut
            // again at the same place makes none, so such failures count towards the limit.
            long start = have;
            try
            {
                await using var output = openPartial(partial, resumed);
                await using var input = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
                var buffer = new byte[1 << 20];
                using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                int read;
                while (true)
                {
                    stall.CancelAfter(retry.StallTimeout);
                    try
                    {
                        read = await input.ReadAsync(buffer, stall.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
                    {
                        throw new TransientException($"no bytes arrived for {retry.StallTimeout.TotalSeconds:F0} s", null, written > start, e);
                    }

                    if (read == 0)
                    {
                        break;
                    }

                    await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                    written += read;
                    if (meta.Size is long limit && written > limit)
                    {
                        throw new InvalidDataException($"{what}: the server sent more than the {limit} bytes announced.");
                    }

                    progress?.Report(new DownloadProgress(repo, file, written, meta.Size));
                }

                await output.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (IOException e) when (e is not TransientException && e is not FileNotFoundException && !IsDiskFull(e) && !cancellationToken.IsCancellationRequested)
            {
                throw new TransientException($"the download was interrupted ({e.Message})", null, written > start, e);
            }
            catch (HttpRequestException e) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TransientException($"the download was interrupted ({e.Message})", null, written > start, e);
            }

            if (meta.Size is long size && written < size)
            {
                throw new TransientException($"the connection closed after {written} of {size} bytes", null, written > start);
            }

            return true;
        }
    }

    /// <summary>Fails early when the disk cannot hold the rest of the file (the check is repeated by the write itself).</summary>
    private static void EnsureSpace(string what, string directory, long needed, string partial)
    {
        long available;
        try
        {
            available = new DriveInfo(directory).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return;                                                              // unknown: the write will tell
        }

        if (available < needed)
        {
            TryDelete(partial);
            throw DiskFull(what, directory, needed, null, available);
        }
    }

    private static DiskFullException DiskFull(string what, string directory, long? needed, Exception? inner, long? available = null) =>
        new($"{what}: not enough disk space in '{directory}'"
            + (needed is long n ? $" ({n / 1048576.0:F1} MiB needed" + (available is long a ? $", {a / 1048576.0:F1} MiB free)" : ")") : "")
            + "; nothing was kept. Free some space or choose another cache (--cache-dir, HF_HUB_CACHE).",
            inner);

    /// <summary>ENOSPC (28) / EDQUOT (122) on Unix; ERROR_DISK_FULL (112) / ERROR_HANDLE_DISK_FULL (39) on Windows.</summary>
    private static bool IsDiskFull(Exception e) =>
        e is DiskFullException || e is IOException && (e.HResult is 28 or 122 || (e.HResult & 0xFFFF) is 112 or 39) || e.InnerException is { } inner && IsDiskFull(inner);

    /// <summary>Size, then sha256 (64 hex ETag: LFS) or git's blob sha1 (40 hex ETag: a small file).</summary>
    private static async Task<bool> VerifiesAsync(string path, FileMeta meta, CancellationToken cancellationToken)
    {
        long length = new FileInfo(path).Length;
        if (meta.Size is long size && length != size)
        {
            return false;
        }

        switch (meta.Hash)
        {
            case HashKind.Sha256:
            {
                await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.Asynchronous | FileOptions.SequentialScan);
                return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false)) == meta.ETag;
            }

            case HashKind.GitSha1:
            {
                using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
                sha1.AppendData(Encoding.ASCII.GetBytes($"blob {length}\0"));
                await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
                var buffer = new byte[1 << 16];
                int read;
                while ((read = await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                {
                    sha1.AppendData(buffer, 0, read);
                }

                return Convert.ToHexStringLower(sha1.GetHashAndReset()) == meta.ETag;
            }

            default:
                return true;                                                     // no hash given: size only (reported in Warnings)
        }
    }

    /// <summary>snapshots/&lt;commit&gt;/&lt;file&gt; → ../../blobs/&lt;etag&gt; as a relative symlink (a copy where links fail).</summary>
    private static void LinkSnapshot(string snapshot, string blob)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(snapshot)!);
        if (File.Exists(snapshot) || new FileInfo(snapshot).LinkTarget is not null)
        {
            File.Delete(snapshot);
        }

        try
        {
            File.CreateSymbolicLink(snapshot, Path.GetRelativePath(Path.GetDirectoryName(snapshot)!, blob));
        }
        catch (IOException)
        {
            File.Copy(blob, snapshot);
        }
        catch (UnauthorizedAccessException)
        {
            File.Copy(blob, snapshot);
        }
    }

    /// <summary>An exclusive lock file: another process fetching the same blob waits here.</summary>
    private static async Task<FileStream> LockAsync(string path, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
            }
            catch (IOException e) when (!IsDiskFull(e))
            {
                await Task.Delay(200, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>The token only for the endpoint's own origin (scheme, host and port).</summary>
    private HttpRequestMessage Request(HttpMethod method, Uri url)
    {
        var request = new HttpRequestMessage(method, url);
        if (token is not null && SameOrigin(url, endpoint))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return request;
    }

    private static bool SameOrigin(Uri a, Uri b) =>
        string.Equals(a.Scheme, b.Scheme, StringComparison.OrdinalIgnoreCase)
        && string.Equals(a.IdnHost, b.IdnHost, StringComparison.OrdinalIgnoreCase)
        && a.Port == b.Port;

    private static Uri Resolve(Uri from, Uri next) => RequireSecure(next.IsAbsoluteUri ? next : new Uri(from, next), "redirect");

    /// <summary>https, or http to a loopback address; anything else is refused (tokens and weights never travel in clear).</summary>
    private static Uri RequireSecure(Uri url, string what)
    {
        bool loopback = url.IsLoopback || (IPAddress.TryParse(url.IdnHost.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip));
        return url.Scheme == Uri.UriSchemeHttps || (url.Scheme == Uri.UriSchemeHttp && loopback)
            ? url
            : throw new ArgumentException($"{what} '{url.GetLeftPart(UriPartial.Authority)}' must use https (plain http is allowed only for loopback addresses).");
    }

    private async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        try
        {
            return await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            throw new TransientException($"cannot reach {request.RequestUri?.GetLeftPart(UriPartial.Authority)} ({e.Message})", null, madeProgress: false, e);
        }
        catch (TaskCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TransientException($"{request.RequestUri?.GetLeftPart(UriPartial.Authority)} timed out", null, madeProgress: false, e);
        }
    }

    private static void ThrowOnError(HttpResponseMessage response, string what, bool allowRedirect)
    {
        int status = (int)response.StatusCode;
        if (status is >= 200 and < 300 || (allowRedirect && status is >= 300 and < 400))
        {
            return;
        }

        if (status is 429 or >= 500)
        {
            throw new TransientException($"the hub answered {status} {response.ReasonPhrase}", RetryAfter(response), madeProgress: false);
        }

        throw status switch
        {
            401 or 403 => new UnauthorizedAccessException($"{what}: the hub refused access ({status}): the repo is gated or private; accept its terms on the Hub and set HF_TOKEN."),
            404 => new FileNotFoundException($"{what}: not found on the hub (404).", what),
            _ => new IOException($"{what}: the hub answered {status} {response.ReasonPhrase}."),
        };
    }

    /// <summary><c>Retry-After</c> as seconds or as an HTTP date.</summary>
    private static TimeSpan? RetryAfter(HttpResponseMessage response) =>
        response.Headers.RetryAfter is { } header
            ? header.Delta ?? (header.Date is { } date ? date - DateTimeOffset.UtcNow : null)
            : null;

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault()
        : response.Content.Headers.TryGetValues(name, out var contentValues) ? contentValues.FirstOrDefault()
        : null;
}
