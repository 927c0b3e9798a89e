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
/// Fetches files over the Hugging Face Hub HTTP API into the hub cache layout Python's <c>huggingface_hub</c>
/// uses (<c>models--org--repo/blobs/&lt;etag&gt;</c>, <c>snapshots/&lt;commit&gt;/&lt;file&gt;</c> linking to the blob,
/// <c>refs/&lt;revision&gt;</c>), so both can share it. Partial downloads resume from <c>&lt;blob&gt;.incomplete</c>;
/// every blob is verified (size, and sha256 for LFS files or the git blob sha1 for small ones, both given by
/// the hub's ETag) before an atomic rename; a lock file serialises processes fetching the same blob; a cached
/// blob that no longer matches its ETag is detected and fetched again.
/// </summary>
internal sealed class HubDownloader(HttpClient http, string endpoint, string cacheRoot, string? token)
{
    /// <summary>The endpoint from <c>HF_ENDPOINT</c>, else the public Hub.</summary>
    public static string DefaultEndpoint() =>
        (Environment.GetEnvironmentVariable("HF_ENDPOINT") is { Length: > 0 } e ? e : "https://huggingface.co").TrimEnd('/');

    /// <summary>True when a blob that was in the cache failed verification and was fetched again.</summary>
    public int RepairedFiles { get; private set; }

    /// <summary>
    /// Makes <paramref name="file"/> of <paramref name="repo"/> at <paramref name="revision"/> present and verified in
    /// the cache; returns its snapshot path, or null when the hub has no such file and it is not required.
    /// </summary>
    public async Task<string?> FetchAsync(string repo, string file, string revision, bool required, IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        var url = new Uri($"{endpoint}/{repo}/resolve/{Uri.EscapeDataString(revision)}/{file}");
        var meta = await HeadAsync(url, repo, file, cancellationToken).ConfigureAwait(false);
        if (meta is null)
        {
            return required ? throw new FileNotFoundException($"{repo}/{file}: not found on the hub ({url}).") : null;
        }

        string repoDir = Path.Combine(cacheRoot, "models--" + repo.Replace("/", "--", StringComparison.Ordinal));
        string blob = Path.Combine(repoDir, "blobs", meta.ETag);
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
        string snapshot = Path.Combine(repoDir, "snapshots", meta.Commit, file);
        LinkSnapshot(snapshot, blob);
        if (!string.Equals(revision, meta.Commit, StringComparison.Ordinal))
        {
            Directory.CreateDirectory(Path.Combine(repoDir, "refs"));
            await File.WriteAllTextAsync(Path.Combine(repoDir, "refs", revision), meta.Commit, cancellationToken).ConfigureAwait(false);
        }

        return snapshot;
    }

    private sealed record FileMeta(Uri Location, string ETag, long? Size, string Commit);

    /// <summary>HEAD without following redirects: the hub puts the LFS sha256 and size on the redirect itself.</summary>
    private async Task<FileMeta?> HeadAsync(Uri url, string repo, string file, CancellationToken cancellationToken)
    {
        using var request = Request(HttpMethod.Head, url);
        using var response = await Send(request, $"{repo}/{file}", cancellationToken).ConfigureAwait(false);
        int status = (int)response.StatusCode;
        if (status == 404)
        {
            return null;
        }

        Fail(response, $"{repo}/{file}", allowRedirect: true);
        string? etag = Header(response, "X-Linked-Etag") ?? response.Headers.ETag?.Tag ?? Header(response, "ETag");
        string? commit = Header(response, "X-Repo-Commit");
        if (etag is null || commit is null)
        {
            throw new InvalidDataException($"{repo}/{file}: the hub's answer lacks an ETag or X-Repo-Commit header ({url}).");
        }

        etag = etag.Replace("W/", "", StringComparison.Ordinal).Trim('"');
        if (etag.Length == 0 || etag.Any(c => !char.IsAsciiLetterOrDigit(c) && c != '-') || !commit.All(char.IsAsciiLetterOrDigit))
        {
            throw new InvalidDataException($"{repo}/{file}: malformed ETag or commit from the hub.");
        }

        long? size = long.TryParse(Header(response, "X-Linked-Size"), out long linked) ? linked : response.Content.Headers.ContentLength;
        var location = status is >= 300 and < 400 && response.Headers.Location is { } next ? (next.IsAbsoluteUri ? next : new Uri(url, next)) : url;
        return new FileMeta(location, etag, size, commit);
    }

    private async Task DownloadAsync(FileMeta meta, string blob, string repo, string file, IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        string partial = blob + ".incomplete";
        long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        if (meta.Size is long expected && have > expected)
        {
            have = 0;                                                            // not a prefix of this blob
        }

        using var request = Request(HttpMethod.Get, meta.Location);
        if (have > 0)
        {
            request.Headers.Range = new RangeHeaderValue(have, null);
        }

        using var response = await Send(request, $"{repo}/{file}", cancellationToken).ConfigureAwait(false);
        Fail(response, $"{repo}/{file}", allowRedirect: false);
        bool resumed = response.StatusCode == HttpStatusCode.PartialContent;
        try
        {
            await using (var output = new FileStream(partial, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None))
            await using (var input = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false))
            {
                long written = resumed ? have : 0;
                var buffer = new byte[1 << 20];
                int read;
                while ((read = await input.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                {
                    await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                    written += read;
                    if (meta.Size is long limit && written > limit)
                    {
                        throw new InvalidDataException($"{repo}/{file}: the server sent more than the {limit} bytes announced.");
                    }

                    progress?.Report(new DownloadProgress(repo, file, written, meta.Size));
                }
            }
        }
        catch (IOException e) when (e is not FileNotFoundException && !cancellationToken.IsCancellationRequested)
        {
            // Keep the partial file: the next run resumes from it.
            throw new IOException($"{repo}/{file}: the download was interrupted ({e.Message}); run again to resume.", e);
        }
        catch (HttpRequestException e)
        {
            throw new IOException($"{repo}/{file}: the download was interrupted ({e.Message}); run again to resume.", e);
        }

        if (!await VerifiesAsync(partial, meta, cancellationToken).ConfigureAwait(false))
        {
            File.Delete(partial);
            throw new InvalidDataException($"{repo}/{file}: the downloaded bytes do not match the hub's size/hash (ETag {meta.ETag}); nothing was kept.");
        }

        File.Move(partial, blob, overwrite: true);
    }

    /// <summary>Size, then sha256 (64 hex ETag: LFS) or git's blob sha1 (40 hex ETag: a small file).</summary>
    private static async Task<bool> VerifiesAsync(string path, FileMeta meta, CancellationToken cancellationToken)
    {
        long length = new FileInfo(path).Length;
        if (meta.Size is long size && length != size)
        {
            return false;
        }

        string etag = meta.ETag.ToLowerInvariant();
        if (etag.Length == 64 && etag.All(Uri.IsHexDigit))
        {
            await using var stream = File.OpenRead(path);
            return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false)) == etag;
        }

        if (etag.Length == 40 && etag.All(Uri.IsHexDigit))
        {
            using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
            sha1.AppendData(Encoding.ASCII.GetBytes($"blob {length}\0"));
            sha1.AppendData(await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false));
            return Convert.ToHexStringLower(sha1.GetHashAndReset()) == etag;
        }

        return true;                                                              // an ETag that is no hash: size only
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
            catch (IOException)
            {
                await Task.Delay(200, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private HttpRequestMessage Request(HttpMethod method, Uri url)
    {
        var request = new HttpRequestMessage(method, url);
        if (!string.IsNullOrEmpty(token))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return request;
    }

    private async Task<HttpResponseMessage> Send(HttpRequestMessage request, string what, CancellationToken cancellationToken)
    {
        try
        {
            return await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            throw new IOException($"{what}: cannot reach {request.RequestUri?.GetLeftPart(UriPartial.Authority)} ({e.Message}).", e);
        }
    }

    private static void Fail(HttpResponseMessage response, string what, bool allowRedirect)
    {
        int status = (int)response.StatusCode;
        if (status is >= 200 and < 300 || (allowRedirect && status is >= 300 and < 400))
        {
            return;
        }

        throw status switch
        {
            401 or 403 => new UnauthorizedAccessException($"{what}: the hub refused access ({status}): the repo is gated or private; accept its terms on the Hub and set HF_TOKEN."),
            404 => new FileNotFoundException($"{what}: not found on the hub (404)."),
            _ => new IOException($"{what}: the hub answered {status} {response.ReasonPhrase}; try again later."),
        };
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault()
        : response.Content.Headers.TryGetValues(name, out var contentValues) ? contentValues.FirstOrDefault()
        : null;
}
