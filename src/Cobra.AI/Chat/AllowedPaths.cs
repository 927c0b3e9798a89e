namespace Cobra.AI;

/// <summary>Confines file access to configured folders, after resolving <c>..</c> and symbolic links.</summary>
internal static class AllowedPaths
{
    /// <summary>
    /// The full path of <paramref name="path"/> when it (and the file it links to) lies inside one of
    /// <paramref name="roots"/>; otherwise <see cref="UnauthorizedAccessException"/> naming <paramref name="setting"/>;
    /// <see cref="FileNotFoundException"/> when an allowed file does not exist.
    /// </summary>
    public static string Resolve(string path, IEnumerable<string> roots, string setting)
    {
        string full = Path.GetFullPath(path);
        string resolved = File.Exists(full) && new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true) is { } target ? target.FullName : full;
        bool any = false;
        foreach (var root in roots)
        {
            any = true;
            string prefix = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root)) + Path.DirectorySeparatorChar;
            if (full.StartsWith(prefix, StringComparison.Ordinal) && resolved.StartsWith(prefix, StringComparison.Ordinal))
            {
                return File.Exists(full) ? full : throw new FileNotFoundException($"Image file '{full}' not found.", full);
            }
        }

        throw new UnauthorizedAccessException(any
            ? $"Image file '{full}' refused: it is not inside an allowed folder ({setting})."
            : $"Image file '{full}' refused: no folders are allowed for image files ({setting}).");
    }
}
