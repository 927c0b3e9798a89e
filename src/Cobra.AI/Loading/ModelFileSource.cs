namespace Cobra.AI.Loading;

/// <summary>Where model files are looked up by Hugging Face repo id and file name.</summary>
internal interface IModelFileSource
{
    /// <summary>The place, for messages.</summary>
    string Description { get; }

    /// <summary>The local path of <paramref name="file"/> in <paramref name="repo"/>, or null when absent.</summary>
    string? Find(string repo, string file);
}

/// <summary>A folder laid out as <c>&lt;root&gt;/&lt;org&gt;/&lt;repo&gt;/&lt;file&gt;</c> (the golden kits' <c>hub/</c>).</summary>
internal sealed class HubMirrorSource : IModelFileSource
{
    private readonly string root;

    /// <summary>Uses <paramref name="root"/>; <see cref="DirectoryNotFoundException"/> when it does not exist.</summary>
    public HubMirrorSource(string root)
    {
        this.root = Directory.Exists(root) ? Path.GetFullPath(root) : throw new DirectoryNotFoundException($"Model folder '{root}' does not exist.");
    }

    /// <inheritdoc />
    public string Description => $"hub-mirror folder '{root}'";

    /// <inheritdoc />
    public string? Find(string repo, string file)
    {
        string path = Path.Combine(root, repo, file);
        return File.Exists(path) ? path : null;
    }
}

/// <summary>
/// The Hugging Face hub cache that Python's <c>huggingface_hub</c> fills:
/// <c>&lt;cache&gt;/models--&lt;org&gt;--&lt;repo&gt;/snapshots/&lt;commit&gt;/&lt;file&gt;</c>, the commit taken from
/// <c>refs/&lt;revision&gt;</c> (or the revision itself when it is a commit hash), so weights a Python user already
/// downloaded are used in place.
/// </summary>
internal sealed class HuggingFaceCacheSource(string cacheRoot, string revision = "main") : IModelFileSource
{
    /// <summary>The cache root: <c>HF_HUB_CACHE</c>, else <c>HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>.</summary>
    public static string DefaultRoot() =>
        Environment.GetEnvironmentVariable("HF_HUB_CACHE") is { Length: > 0 } cache ? cache
        : Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } home ? Path.Combine(home, "hub")
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub");

    /// <inheritdoc />
    public string Description => $"Hugging Face cache '{cacheRoot}' (revision {revision})";

    /// <inheritdoc />
    public string? Find(string repo, string file)
    {
        string repoDir = Path.Combine(cacheRoot, "models--" + repo.Replace("/", "--", StringComparison.Ordinal));
        string? commit = Commit(repoDir);
        if (commit is null)
        {
            return null;
        }

        string path = Path.Combine(repoDir, "snapshots", commit, file);
        return File.Exists(path) ? path : null;
    }

    private string? Commit(string repoDir)
    {
        if (revision.Length == 40 && revision.All(Uri.IsHexDigit))
        {
            return revision;
        }

        if (revision.Contains("..", StringComparison.Ordinal) || Path.IsPathRooted(revision))
        {
            throw new ArgumentException($"Revision '{revision}' is not a branch, tag or commit.");
        }

        string reference = Path.Combine(repoDir, "refs", revision);
        if (!File.Exists(reference))
        {
            return null;
        }

        string commit = File.ReadAllText(reference).Trim();
        return commit.Length > 0 && commit.All(c => char.IsAsciiLetterOrDigit(c)) ? commit : null;
    }
}
