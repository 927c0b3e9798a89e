using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Cobra.AI;
using Cobra.AI.Generation;

namespace Cobra.Cli;

/// <summary>Option builders shared by the commands, with the validation messages the tool has always given.</summary>
internal static class CliOptions
{
    public static Option<string?> Text(string name, string helpName, string description) =>
        new(name) { Description = description, HelpName = helpName };

    public static Option<bool> Flag(string name, string description) =>
        new(name) { Description = description, Arity = ArgumentArity.Zero };

    /// <summary>An integer in [min, max]; absent gives <paramref name="fallback"/>.</summary>
    public static Option<int> Int(string name, string description, int fallback, int min, int max = int.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = "N",
            DefaultValueFactory = _ => fallback,
            CustomParser = result => ParseInt(result, name, min, max),
        };

    /// <summary>A 64-bit integer or null.</summary>
    public static Option<long?> Long(string name, string description) =>
        new(name)
        {
            Description = description,
            HelpName = "N",
            CustomParser = result =>
            {
                string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
                if (long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v))
                {
                    return v;
                }

                result.AddError($"{name} must be an integer, not '{text}'.");
                return null;
            },
        };

    /// <summary>A finite number in [min, max], or null when absent (the command decides the default).</summary>
    public static Option<double?> Number(string name, string description, double min, double max) =>
        new(name)
        {
            Description = description,
            HelpName = "X",
            CustomParser = result =>
            {
                string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
                if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) && v >= min && v <= max)
                {
                    return v;
                }

                result.AddError($"{name} must be a number in [{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}], not '{text}'.");
                return null;
            },
        };

    /// <summary>One of <paramref name="choices"/>, or null when absent.</summary>
    public static Option<string?> Choice(string name, string description, params string[] choices)
    {
        var option = new Option<string?>(name) { Description = description, HelpName = string.Join('|', choices) };
        option.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && !choices.Contains(result.Tokens[0].Value, StringComparer.Ordinal))
            {
                result.AddError($"{name} must be {string.Join(", ", choices[..^1])} or {choices[^1]}, not '{result.Tokens[0].Value}'.");
            }
        });
        return option;
    }

    private static int ParseInt(ArgumentResult result, string name, int min, int max)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
        if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min && v <= max)
        {
            return v;
        }

        result.AddError($"{name} must be an integer in [{min}, {max}], not '{text}'.");
        return 0;
    }
}

/// <summary>
/// The options every model-using command shares (<c>--model-dir</c>, <c>--cache-dir</c>, <c>--model-id</c>,
/// <c>--device</c>, <c>--precision</c>), read into a <see cref="CobraModelOptions"/> for <see cref="CobraModelComposition"/>.
/// </summary>
internal sealed class ModelOptionSet
{
    public Option<string?> ModelDir { get; } = CliOptions.Text("--model-dir", "DIR", "A hub-mirror folder (<org>/<repo>/<file>) holding the model files.");

    public Option<string?> CacheDir { get; } = CliOptions.Text("--cache-dir", "DIR", "A Hugging Face cache (default HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub); missing files are downloaded unless HF_HUB_OFFLINE=1.");

    public Option<string?> ModelId { get; } = CliOptions.Text("--model-id", "ID", "The Cobra model id (default cobra+3b).");

    public Option<string?> Device { get; } = CliOptions.Text("--device", "auto|cpu|cuda[:N]", "Where to run (default auto: CUDA when available).");

    public Option<string?> Precision { get; }

    public ModelOptionSet(bool withPlacement = true, string precisionHelp = "fp32|bf16|fp16")
    {
        Precision = CliOptions.Text("--precision", precisionHelp, "Weight precision (default fp32 on CPU, bf16 on CUDA).");
        WithPlacement = withPlacement;
    }

    private bool WithPlacement { get; }

    public void AddTo(Command command)
    {
        command.Options.Add(ModelDir);
        command.Options.Add(CacheDir);
        command.Options.Add(ModelId);
        if (WithPlacement)
        {
            command.Options.Add(Device);
            command.Options.Add(Precision);
        }

        command.Validators.Add(result =>
        {
            if (result.GetResult(ModelDir) is not null && result.GetResult(CacheDir) is not null)
            {
                result.AddError("Give --model-dir DIR (a hub-mirror folder) or --cache-dir DIR (a Hugging Face cache), not both.");
            }
        });
    }

    /// <summary>The model options; downloads are allowed for the cache unless <paramref name="allowDownload"/> is false.</summary>
    public CobraModelOptions Read(ParseResult parse, bool allowDownload = true) => new()
    {
        ModelPath = parse.GetValue(ModelDir),
        CacheDirectory = parse.GetValue(CacheDir),
        ModelId = parse.GetValue(ModelId) ?? "cobra+3b",
        Device = (WithPlacement ? parse.GetValue(Device) : null) ?? "auto",
        Precision = WithPlacement ? parse.GetValue(Precision) : null,
        AllowDownload = allowDownload && parse.GetValue(ModelDir) is null,
    };
}

/// <summary>
/// The sampling options <c>generate</c> and <c>chat</c> share, and their one rule: greedy unless a temperature
/// &gt; 0 is given; --top-k or --top-p alone imply temperature 1, as in upstream's generate(top_k=..., top_p=...);
/// --top-k 1 is greedy.
/// </summary>
internal sealed class SamplingOptionSet
{
    public SamplingOptionSet(string maxNewTokensHelp) =>
        MaxNewTokens = CliOptions.Int("--max-new-tokens", maxNewTokensHelp, 512, 1, 1_000_000);

    public Option<int> MaxNewTokens { get; }

    public Option<double?> Temperature { get; } = CliOptions.Number("--temperature", "Sampling temperature; 0 is greedy (default 0, or 1 with --top-k/--top-p).", 0, 100);

    public Option<int> TopK { get; } = CliOptions.Int("--top-k", "Sample from the K most likely tokens; 0 is off.", 0, 0);

    public Option<double?> TopP { get; } = CliOptions.Number("--top-p", "Nucleus sampling mass in [0, 1]; 0 is off.", 0, 1);

    public Option<long?> Seed { get; } = CliOptions.Long("--seed", "Random seed for sampling.");

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { MaxNewTokens, Temperature, TopK, TopP, Seed })
        {
            command.Options.Add(option);
        }
    }

    /// <summary>The sampling settings; TopK and TopP 0 mean off.</summary>
    public SamplingOptions Read(ParseResult parse)
    {
        bool sampleAsked = parse.GetResult(TopK) is { Implicit: false } || parse.GetResult(TopP) is { Implicit: false };
        return new SamplingOptions
        {
            MaxNewTokens = parse.GetValue(MaxNewTokens),
            Temperature = parse.GetValue(Temperature) ?? (sampleAsked ? 1.0 : 0.0),
            TopK = parse.GetValue(TopK),
            TopP = parse.GetValue(TopP) ?? 0,
            Seed = parse.GetValue(Seed),
        };
    }
}
