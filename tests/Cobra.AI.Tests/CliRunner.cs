using Cobra.Cli;

namespace Cobra.AI.Tests;

/// <summary>Runs the <c>cobra</c> tool in process and captures its exit code and output.</summary>
internal static class CliRunner
{
    public static async Task<(int Exit, string Out, string Err)> RunAsync(CancellationToken cancellationToken, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = await CobraCli.RunAsync(args, stdout, stderr, cancellationToken);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    public static Task<(int Exit, string Out, string Err)> RunAsync(params string[] args) => RunAsync(default, args);

    /// <summary>Runs with <paramref name="stdin"/> as piped input; <paramref name="stdout"/> may observe (and interrupt) the output.</summary>
    public static async Task<(int Exit, string Out, string Err)> RunWithInputAsync(string stdin, TextWriter stdout, CliInterrupts interrupts, params string[] args)
    {
        var stderr = new StringWriter();
        var context = new CliContext(stdout, stderr, new StringReader(stdin), ErrorIsTerminal: false, interrupts);
        int exit = await CobraCli.RunAsync(args, context, inputIsTerminal: false);
        return (exit, stdout.ToString()!, stderr.ToString());
    }
}
