using System.CommandLine;
using Cobra.AI;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using TorchSharp;

namespace Cobra.Cli;

/// <summary>
/// <c>cobra convert</c>: writes a compact bundle (bf16 by default, or fp32) that loads like a hub folder:
/// <c>cobra generate --model-dir OUT</c>.
/// </summary>
internal static class ConvertCommand
{
    public static Command Create(CliContext cli)
    {
        var model = new ModelOptionSet(withPlacement: false);
        var output = CliOptions.Text("--output", "DIR", "Where to write the bundle (a hub-mirror folder).");
        output.Required = true;
        var precision = CliOptions.Choice("--precision", "Weight precision of the bundle (default bf16).", "bf16", "fp32");
        var command = new Command("convert", "Write a compact bundle (a hub folder: pos-embeds resampled, unused tensors dropped) to --output DIR.");
        model.AddTo(command);
        command.Options.Add(output);
        command.Options.Add(precision);
        command.SetAction((parse, cancellationToken) =>
        {
            var dtype = parse.GetValue(precision) == "fp32" ? torch.ScalarType.Float32 : torch.ScalarType.BFloat16;
            return RunAsync(model.Read(parse, allowDownload: false), parse.GetValue(output)!, dtype, cli, cancellationToken);
        });
        return command;
    }

    private static async Task<int> RunAsync(CobraModelOptions model, string output, torch.ScalarType dtype, CliContext cli, CancellationToken cancellationToken)
    {
        var files = await CobraModelComposition.ResolveFilesAsync(model, null, null, cancellationToken).ConfigureAwait(false);
        TorchRuntime.EnsureInitialized();
        cancellationToken.ThrowIfCancellationRequested();
        var report = await Task.Run(() => BundleWriter.Write(files, output, dtype), cancellationToken).ConfigureAwait(false);
        await cli.Out.WriteLineAsync($"wrote {output}: {report.BundleBytes / 1e6:F1} MB of weights (from {report.SourceBytes / 1e6:F1} MB), content sha256 {report.ContentHash}").ConfigureAwait(false);
        return 0;
    }
}
