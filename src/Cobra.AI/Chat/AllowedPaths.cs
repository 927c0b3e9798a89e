using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Cobra.AI;

/// <summary>
/// Confines file reads to configured folders. A path is compared with the roots after every component is
/// resolved (symbolic links to directories included, as the kernel would follow them); the file is opened
/// without blocking, and the opened handle, not the path, must be a regular file that still lies inside a
/// root. The read is bounded and cancellable, so a FIFO, a device, a directory, a link swapped in between
/// the check and the open, or an endless file each end in an exception naming the problem.
/// </summary>
internal static partial class AllowedPaths
{
    /// <summary>Links followed while resolving one path, as Linux's own limit (ELOOP).</summary>
    public const int MaxSymbolicLinks = 40;

    private const int ChunkBytes = 81920;

    /// <summary>
    /// The fully resolved path of <paramref name="path"/> when it lies inside one of <paramref name="roots"/>
    /// (also resolved); otherwise <see cref="UnauthorizedAccessException"/> naming <paramref name="setting"/>.
    /// Whether the file exists is not checked here.
    /// </summary>
    public static string Resolve(string path, IEnumerable<string> roots, string setting)
    {
        string real;
        try
        {
            real = RealPath(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new UnauthorizedAccessException($"Image file '{path}' refused: its path cannot be resolved ({e.Message}).", e);
        }

        bool any = false;
        foreach (var root in roots)
        {
            any = true;
            if (IsInside(real, root))
            {
                return real;
            }
        }

        throw new UnauthorizedAccessException(any
            ? $"Image file '{path}' refused: it is not inside an allowed folder ({setting})."
            : $"Image file '{path}' refused: no folders are allowed for image files ({setting}).");
    }

    /// <summary>
    /// Reads the regular file <paramref name="path"/> inside <paramref name="roots"/>, at most
    /// <paramref name="maxBytes"/> bytes.
    /// </summary>
    /// <exception cref="UnauthorizedAccessException">Outside the roots, or not a regular file.</exception>
    /// <exception cref="FileNotFoundException">Inside the roots but missing.</exception>
    /// <exception cref="CobraImageLimitException">Larger than <paramref name="maxBytes"/> (<paramref name="limitName"/>).</exception>
    /// <exception cref="IOException">The read failed.</exception>
    public static async Task<byte[]> ReadFileAsync(string path, IEnumerable<string> roots, string setting, long maxBytes, string limitName, CancellationToken cancellationToken)
    {
        var rootList = roots.ToList();
        string real = Resolve(path, rootList, setting);
        using var handle = OpenRegularFile(path, real, rootList, setting);
        long length = RandomAccess.GetLength(handle);
        if (length > maxBytes)
        {
            throw new CobraImageLimitException($"Image file '{path}' has {length} bytes, more than the limit of {maxBytes} ({limitName}).", limitName);
        }

        // The length is only a hint (the file may grow while it is read): read one byte past the limit at most.
        var buffer = new MemoryStream((int)Math.Min(length, Array.MaxLength));
        var chunk = new byte[ChunkBytes];
        long offset = 0;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int read = await RandomAccess.ReadAsync(handle, chunk, offset, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return buffer.ToArray();
            }

            offset += read;
            if (offset > maxBytes)
            {
                throw new CobraImageLimitException($"Image file '{path}' has more than {maxBytes} bytes ({limitName}).", limitName);
            }

            buffer.Write(chunk, 0, read);
        }
    }

    /// <summary>
    /// <paramref name="path"/> with every component resolved: <c>.</c> and <c>..</c> applied in order and each
    /// symbolic link (to a file or a directory) replaced by its target, as the kernel walks a path.
    /// Components that do not exist are kept as they are.
    /// </summary>
    public static string RealPath(string path)
    {
        string start = Path.IsPathFullyQualified(path) ? path
            : Path.IsPathRooted(path) ? Path.GetFullPath(path)
            : Path.Join(Directory.GetCurrentDirectory(), path);
        string current = Path.GetPathRoot(start) ?? throw new ArgumentException($"'{path}' has no root.", nameof(path));
        var pending = new Stack<string>();
        PushComponents(pending, start[current.Length..]);
        int links = 0;
        while (pending.TryPop(out var part))
        {
            if (part is "" or ".")
            {
                continue;
            }

            if (part == "..")
            {
                current = Path.GetDirectoryName(current) ?? current;
                continue;
            }

            string next = Path.Join(current, part);
            string? target = new FileInfo(next).LinkTarget;
            if (target is null)
            {
                current = next;
                continue;
            }

            if (++links > MaxSymbolicLinks)
            {
                throw new IOException($"more than {MaxSymbolicLinks} symbolic links");
            }

            // An absolute target restarts from its root; a relative one continues from the link's folder.
            if (Path.IsPathRooted(target))
            {
                current = Path.GetPathRoot(target)!;
                target = target[current.Length..];
            }

            PushComponents(pending, target);
        }

        return current;
    }

    private static void PushComponents(Stack<string> pending, string relative)
    {
        var parts = relative.Split([Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar]);
        for (int i = parts.Length - 1; i >= 0; i--)
        {
            pending.Push(parts[i]);
        }
    }

    private static bool IsInside(string real, string root)
    {
        string prefix = Path.TrimEndingDirectorySeparator(RealPath(root)) + Path.DirectorySeparatorChar;
        return real.StartsWith(prefix, OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);
    }

    private static SafeFileHandle OpenRegularFile(string shown, string real, IReadOnlyList<string> roots, string setting)
    {
        if (!File.Exists(real) && !Directory.Exists(real))
        {
            throw new FileNotFoundException($"Image file '{shown}' not found.", shown);
        }

        return OperatingSystem.IsLinux() ? OpenRegularFileLinux(shown, real, roots, setting) : OpenRegularFilePortable(shown, real);
    }

    /// <summary>
    /// Linux: open with O_NONBLOCK (a FIFO without a writer would block a plain open forever), then ask the
    /// handle what it is (statx) and where it is (/proc/self/fd), so a link or FIFO swapped in after the
    /// path check is still caught.
    /// </summary>
    private static SafeFileHandle OpenRegularFileLinux(string shown, string real, IReadOnlyList<string> roots, string setting)
    {
        const int ReadOnlyNonBlocking = 0x800 | 0x100 | 0x80000; // O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC
        int fd = Open(real, ReadOnlyNonBlocking);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw errno switch
            {
                2 or 20 => new FileNotFoundException($"Image file '{shown}' not found.", shown), // ENOENT, ENOTDIR
                13 or 1 => new UnauthorizedAccessException($"Image file '{shown}' refused: permission denied."), // EACCES, EPERM
                _ => new IOException($"Image file '{shown}' cannot be opened (errno {errno})."),
            };
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            int type = FileType(handle, real);
            if (type != RegularFileType)
            {
                throw new UnauthorizedAccessException($"Image file '{shown}' refused: it is {DescribeType(type)}, not a regular file.");
            }

            string? opened = new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
            if (opened is not null && !roots.Any(root => IsInside(opened, root)))
            {
                throw new UnauthorizedAccessException($"Image file '{shown}' refused: it is not inside an allowed folder ({setting}).");
            }

            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Elsewhere (no statx): refuse directories by path; Windows has no FIFOs in the file system.</summary>
    private static SafeFileHandle OpenRegularFilePortable(string shown, string real)
    {
        if ((File.GetAttributes(real) & FileAttributes.Directory) != 0)
        {
            throw new UnauthorizedAccessException($"Image file '{shown}' refused: it is a directory, not a regular file.");
        }

        return File.OpenHandle(real, FileMode.Open, FileAccess.Read, FileShare.Read);
    }

    private const int FileTypeMask = 0xF000;
    private const int RegularFileType = 0x8000;

    /// <summary>
    /// The S_IFMT bits of the opened file. A C library without statx (musl before 1.2.5) falls back to the
    /// path: folders are still refused, and whatever else slips through is harmless once open without
    /// blocking (a FIFO reads as empty, a device is cut off at the byte limit).
    /// </summary>
    private static int FileType(SafeFileHandle handle, string real)
    {
        try
        {
            return FileTypeOfHandle(handle);
        }
        catch (EntryPointNotFoundException)
        {
            return (File.GetAttributes(real) & FileAttributes.Directory) != 0 ? 0x4000 : RegularFileType;
        }
    }

    private static unsafe int FileTypeOfHandle(SafeFileHandle handle)
    {
        const int EmptyPath = 0x1000; // AT_EMPTY_PATH: stat the descriptor itself
        const uint TypeMask = 0x1;    // STATX_TYPE
        byte* buffer = stackalloc byte[256];
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (StatX((int)handle.DangerousGetHandle(), "", EmptyPath, TypeMask, buffer) != 0)
            {
                throw new IOException($"cannot inspect the opened file (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }

        // struct statx: stx_mode is the u16 at offset 28, the same on every architecture.
        return *(ushort*)(buffer + 28) & FileTypeMask;
    }

    private static string DescribeType(int type) => type switch
    {
        0x4000 => "a directory",
        0x1000 => "a FIFO",
        0x2000 => "a character device",
        0x6000 => "a block device",
        0xC000 => "a socket",
        _ => "not a regular file",
    };

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int StatX(int directory, string path, int flags, uint mask, byte* buffer);
}
