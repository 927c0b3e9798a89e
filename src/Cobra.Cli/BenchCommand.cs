namespace Cobra.Cli;

internal static class BenchCommand
{
    public static int Run(string[] args, TextWriter stdout) => throw new NotImplementedException();
}
