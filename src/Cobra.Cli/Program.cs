using Cobra.Cli;

return await CobraCli.RunAsync(args, Console.Out, Console.Error).ConfigureAwait(false);
