using Cobra.Cli;

// Ctrl+C: stops the running answer in `cobra chat`; otherwise (or pressed again) cancels the command.
var interrupts = new CliInterrupts();
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    if (!interrupts.TryInterrupt())
    {
        cancel.Cancel();
    }
};

var cli = new CliContext(Console.Out, Console.Error, Console.In, ErrorIsTerminal: !Console.IsErrorRedirected, interrupts);
return await CobraCli.RunAsync(args, cli, inputIsTerminal: !Console.IsInputRedirected, cancel.Token).ConfigureAwait(false);
