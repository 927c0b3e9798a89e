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
    private static readonly HashSet<string> ValueOptions = ["model-dir", "cache-dir", "model-id", "output", "precision"];

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, CancellationToken cancellationToken)
    {
        var cli = CliArguments.Parse(args, ValueOptions, new HashSet<string>());
        string output = cli.Get("output") ?? throw new UsageException("--output DIR is required.");
        var dtype = (cli.Get("precision") ?? "bf16") switch
        {
            "bf16" => torch.ScalarType.BFloat16,
            "fp32" => torch.ScalarType.Float32,
            var other => throw new UsageException($"--precision must be bf16 or fp32, not '{other}'."),
        };
        string modelId = cli.Get("model-id") ?? "cobra+3b";
        IModelFileSource source = cli.Get("model-dir") is { } dir ? new HubMirrorSource(dir) : new HuggingFaceCacheSource(cli.Get("cache-dir") ?? HuggingFaceCacheSource.DefaultRoot());
        var files = CobraModelFiles.Resolve(source, modelId);
        TorchRuntime.EnsureInitialized();
        cancellationToken.ThrowIfCancellationRequested();
        var report = await Task.Run(() => BundleWriter.Write(files, output, dtype), cancellationToken).ConfigureAwait(false);
        await stdout.WriteLineAsync($"wrote {output}: {report.BundleBytes / 1e6:F1} MB of weights (from {report.SourceBytes / 1e6:F1} MB), content sha256 {report.ContentHash}").ConfigureAwait(false);
        return 0;
    }
}
