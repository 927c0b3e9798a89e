using System.Globalization;

namespace Cobra.Cli;

/// <summary>A command-line mistake: reported with the usage text and exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>
/// <c>--name value</c>, <c>--name=value</c> and bare <c>--flag</c> options after a command name. Every option
/// must be declared by the command; unknown, repeated or malformed options are usage errors.
/// </summary>
internal sealed class CliArguments
{
    private readonly Dictionary<string, string?> values = new(StringComparer.Ordinal);

    private CliArguments()
    {
    }

    /// <summary>Parses <paramref name="args"/> against the declared value options and flags.</summary>
    public static CliArguments Parse(IReadOnlyList<string> args, IReadOnlySet<string> valueOptions, IReadOnlySet<string> flags)
    {
        var parsed = new CliArguments();
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
            {
                throw new UsageException($"Unexpected argument '{arg}'.");
            }

            int eq = arg.IndexOf('=', StringComparison.Ordinal);
            string name = eq < 0 ? arg[2..] : arg[2..eq];
            string? value;
            if (flags.Contains(name))
            {
                value = eq < 0 ? null : throw new UsageException($"--{name} takes no value.");
            }
            else if (valueOptions.Contains(name))
            {
                value = eq >= 0 ? arg[(eq + 1)..]
                    : i + 1 < args.Count ? args[++i]
                    : throw new UsageException($"--{name} needs a value.");
            }
            else
            {
                throw new UsageException($"Unknown option --{name}.");
            }

            if (!parsed.values.TryAdd(name, value))
            {
                throw new UsageException($"--{name} is given more than once.");
            }
        }

        return parsed;
    }

    /// <summary>True when the option or flag was given.</summary>
    public bool Has(string name) => values.ContainsKey(name);

    /// <summary>The option's value, or null.</summary>
    public string? Get(string name) => values.TryGetValue(name, out var v) ? v : null;

    /// <summary>An integer option within [min, max], or the default.</summary>
    public int GetInt(string name, int fallback, int min, int max = int.MaxValue)
    {
        string? text = Get(name);
        if (text is null)
        {
            return fallback;
        }

        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min && v <= max
            ? v
            : throw new UsageException($"--{name} must be an integer in [{min}, {max}], not '{text}'.");
    }

    /// <summary>A 64-bit integer option, or null.</summary>
    public long? GetLong(string name)
    {
        string? text = Get(name);
        return text is null ? null
            : long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) ? v
            : throw new UsageException($"--{name} must be an integer, not '{text}'.");
    }

    /// <summary>A finite number option within [min, max], or the default.</summary>
    public double GetDouble(string name, double fallback, double min, double max)
    {
        string? text = Get(name);
        if (text is null)
        {
            return fallback;
        }

        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) && v >= min && v <= max
            ? v
            : throw new UsageException($"--{name} must be a number in [{min}, {max}], not '{text}'.");
    }
}
