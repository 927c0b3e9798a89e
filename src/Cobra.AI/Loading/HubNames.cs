namespace Cobra.AI.Loading;

/// <summary>
/// Checks of the names that become cache paths (repo ids, Cobra model ids, revisions, file names, commits and
/// ETags), so that nothing a user or a hub sends can place a file outside the cache root. Each failure is an
/// <see cref="ArgumentException"/> (user input) or <see cref="InvalidDataException"/> (hub answers) naming the value.
/// </summary>
internal static class HubNames
{
    private const int MaxNameLength = 96;
    private const int MaxRevisionLength = 255;
    private const int MaxFilePathLength = 1024;

    /// <summary>A Cobra model id such as <c>cobra+3b</c>: one path segment of letters, digits and <c>._+-</c>.</summary>
    public static string ValidateModelId(string modelId)
    {
        ArgumentNullException.ThrowIfNull(modelId);
        return IsSegment(modelId, extra: "._+-") && modelId.Length <= MaxNameLength
            ? modelId
            : throw new ArgumentException($"Model id '{Printable(modelId)}' is not valid: use one name of letters, digits and . _ + - (like cobra+3b), without '/' or '..'.", nameof(modelId));
    }

    /// <summary>A Hugging Face repo id <c>org/name</c>.</summary>
    public static string ValidateRepoId(string repo)
    {
        ArgumentNullException.ThrowIfNull(repo);
        var parts = repo.Split('/');
        return parts.Length == 2 && parts.All(p => IsSegment(p, extra: "._-") && p.Length <= MaxNameLength)
            ? repo
            : throw new ArgumentException($"Repo id '{Printable(repo)}' is not valid: expected org/name of letters, digits and . _ -.", nameof(repo));
    }

    /// <summary>A branch, tag or commit: <c>[A-Za-z0-9._-]</c> segments joined by <c>/</c> (as in <c>refs/pr/1</c>), never <c>..</c>.</summary>
    public static string ValidateRevision(string revision)
    {
        ArgumentNullException.ThrowIfNull(revision);
        bool ok = revision.Length is > 0 and <= MaxRevisionLength
                  && revision.Split('/').All(p => IsSegment(p, extra: "._-"))
                  && !revision.EndsWith(".lock", StringComparison.Ordinal);
        return ok
            ? revision
            : throw new ArgumentException($"Revision '{Printable(revision)}' is not a branch, tag or commit (letters, digits, . _ - and / between names; no '..').", nameof(revision));
    }

    /// <summary>A file path inside a repo: relative, <c>/</c>-separated, no empty, <c>.</c> or <c>..</c> segment, no control characters.</summary>
    public static string ValidateFilePath(string file)
    {
        ArgumentNullException.ThrowIfNull(file);
        bool ok = file.Length is > 0 and <= MaxFilePathLength
                  && !file.Contains('\\', StringComparison.Ordinal) && !file.Contains(':', StringComparison.Ordinal)
                  && !file.Any(char.IsControl)
                  && file.Split('/').All(p => p.Length > 0 && p != "." && p != "..");
        return ok ? file : throw new ArgumentException($"File name '{Printable(file)}' is not a relative path inside the repo.", nameof(file));
    }

    /// <summary>A commit id from the hub: 40 (sha1) or 64 (sha256) lower-case hex digits.</summary>
    public static string ValidateCommit(string commit, string what) =>
        commit.Length is 40 or 64 && commit.All(char.IsAsciiHexDigit)
            ? commit.ToLowerInvariant()
            : throw new InvalidDataException($"{what}: the hub's X-Repo-Commit '{Printable(commit)}' is not a commit hash.");

    /// <summary>An ETag from the hub, used as a blob file name: letters, digits and <c>-</c>, at most 128 characters.</summary>
    public static string ValidateETag(string etag, string what) =>
        etag.Length is > 0 and <= 128 && etag.All(c => char.IsAsciiLetterOrDigit(c) || c == '-')
            ? etag
            : throw new InvalidDataException($"{what}: malformed ETag '{Printable(etag)}' from the hub.");

    /// <summary><paramref name="path"/> made absolute; <see cref="InvalidDataException"/> unless it lies strictly inside <paramref name="root"/>.</summary>
    public static string Inside(string root, string path)
    {
        string fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root)) + Path.DirectorySeparatorChar;
        string full = Path.GetFullPath(path);
        return full.StartsWith(fullRoot, StringComparison.Ordinal)
            ? full
            : throw new InvalidDataException($"'{path}' would lie outside the cache '{root}'; refused.");
    }

    private static bool IsSegment(string s, string extra) =>
        s.Length > 0 && s != "." && s != ".." && !s.Contains("..", StringComparison.Ordinal)
        && char.IsAsciiLetterOrDigit(s[0]) && s.All(c => char.IsAsciiLetterOrDigit(c) || extra.Contains(c, StringComparison.Ordinal));

    private static string Printable(string s)
    {
        var clean = new string([.. s.Take(120).Select(c => char.IsControl(c) ? '?' : c)]);
        return s.Length > 120 ? clean + "…" : clean;
    }
}
