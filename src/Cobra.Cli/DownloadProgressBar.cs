using System.Diagnostics;
using Cobra.AI.Loading;

namespace Cobra.Cli;

/// <summary>
/// Download progress on stderr. On a terminal: one line per file redrawn in place at most 10 times a second.
/// Redirected (a log file, CI): a plain line per file every <see cref="LogInterval"/> and when the file is done,
/// no carriage returns.
/// </summary>
internal sealed class DownloadProgressBar(TextWriter output, bool terminal, Func<TimeSpan>? clock = null) : IProgress<DownloadProgress>
{
    /// <summary>Shortest time between two redraws on a terminal.</summary>
    public static readonly TimeSpan RedrawInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Time between two plain lines for the same file when stderr is redirected.</summary>
    public static readonly TimeSpan LogInterval = TimeSpan.FromSeconds(5);

    private readonly Func<TimeSpan> now = clock ?? StopwatchClock();
    private readonly Lock gate = new();
    private string? current;
    private bool currentDone;
    private TimeSpan lastDraw = TimeSpan.MinValue;

    public void Report(DownloadProgress value)
    {
        lock (gate)
        {
            string name = $"{value.Repo}/{value.File}";
            bool done = value.Total is long total ? value.Bytes >= total : false;
            bool newFile = current != name;
            if (!newFile && currentDone)
            {
                return;                                                          // the final "done" report repeats
            }

            var time = now();
            var interval = terminal ? RedrawInterval : LogInterval;
            if (!newFile && !done && time - lastDraw < interval)
            {
                return;
            }

            if (newFile && current is not null && terminal)
            {
                output.WriteLine();
            }

            current = name;
            currentDone = done;
            lastDraw = time;
            string line = $"{name}  {Amount(value)}";
            if (terminal)
            {
                output.Write($"\r{line}\u001b[K");
            }
            else
            {
                output.WriteLine(line);
            }
        }
    }

    /// <summary>Ends the in-place line on a terminal.</summary>
    public void Done()
    {
        lock (gate)
        {
            if (current is not null && terminal)
            {
                output.WriteLine();
            }

            current = null;
        }
    }

    private static Func<TimeSpan> StopwatchClock()
    {
        var watch = Stopwatch.StartNew();
        return () => watch.Elapsed;
    }

    private static string Amount(DownloadProgress value) =>
        value.Total is long total && total > 0
            ? $"{value.Bytes / 1048576.0,9:F1} / {total / 1048576.0:F1} MiB {100.0 * value.Bytes / total,5:F1}%"
            : $"{value.Bytes / 1048576.0,9:F1} MiB";
}
