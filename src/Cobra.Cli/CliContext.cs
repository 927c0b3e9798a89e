namespace Cobra.Cli;

/// <summary>A command-line mistake found after parsing: reported like a parse error, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>
/// The tool's console: its streams (the tests pass string writers and piped input), whether stderr is a terminal
/// (progress redraws in place) and the Ctrl+C routing.
/// </summary>
/// <param name="Out">Standard output: answers and reports.</param>
/// <param name="Err">Standard error: errors, warnings, progress.</param>
/// <param name="In">Standard input (<c>cobra chat</c>).</param>
/// <param name="ErrorIsTerminal">True when <paramref name="Err"/> is an interactive terminal.</param>
/// <param name="Interrupts">Where Ctrl+C goes.</param>
internal sealed record CliContext(TextWriter Out, TextWriter Err, TextReader In, bool ErrorIsTerminal, CliInterrupts Interrupts);

/// <summary>
/// Ctrl+C routing: while an interruptible operation runs (an answer in <c>cobra chat</c>) Ctrl+C cancels that
/// operation only; otherwise it cancels the whole command.
/// </summary>
internal sealed class CliInterrupts
{
    private CancellationTokenSource? current;

    /// <summary>Starts an operation that Ctrl+C stops; dispose the returned scope when it ends.</summary>
    public Operation Begin(CancellationToken outer)
    {
        var source = CancellationTokenSource.CreateLinkedTokenSource(outer);
        Volatile.Write(ref current, source);
        return new Operation(this, source);
    }

    /// <summary>Cancels the running operation; false when none runs (then the caller ends the command).</summary>
    public bool TryInterrupt()
    {
        var source = Volatile.Read(ref current);
        if (source is null)
        {
            return false;
        }

        try
        {
            source.Cancel();
            return true;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>One interruptible operation.</summary>
    internal sealed class Operation(CliInterrupts owner, CancellationTokenSource source) : IDisposable
    {
        /// <summary>Cancelled by Ctrl+C or by the command's own token.</summary>
        public CancellationToken Token => source.Token;

        /// <summary>True when Ctrl+C (not the command's token) stopped it.</summary>
        public bool Interrupted(CancellationToken outer) => source.IsCancellationRequested && !outer.IsCancellationRequested;

        public void Dispose()
        {
            Interlocked.CompareExchange(ref owner.current, null, source);
            source.Dispose();
        }
    }
}
