using System.CommandLine;
using System.Globalization;

namespace Cobra.Cli;

/// <summary>
/// Name-based access to a parsed command whose options are all plain strings and flags (<c>cobra bench</c>,
/// whose options are declared as name sets by the bench itself): values are checked here, as the bench reads them.
/// </summary>
internal sealed class CliArguments(ParseResult parse, IReadOnlyDictionary<string, Option> options)
{
    /// <summary>A command with one string option per name in <paramref name="valueOptions"/> and one flag per name in <paramref name="flags"/>.</summary>
    public static (Command Command, Func<ParseResult, CliArguments> Read) Declare(string name, string description, IEnumerable<string> valueOptions, IEnumerable<string> flags, IReadOnlyDictionary<string, string> help)
    {
        var command = new Command(name, description);
        var declared = new Dictionary<string, Option>(StringComparer.Ordinal);
        foreach (var value in valueOptions)
        {
            declared[value] = CliOptions.Text("--" + value, "VALUE", help.GetValueOrDefault(value, ""));
        }

        foreach (var flag in flags)
        {
            declared[flag] = CliOptions.Flag("--" + flag, help.GetValueOrDefault(flag, ""));
        }

        foreach (var option in declared.Values.OrderBy(o => o.Name, StringComparer.Ordinal))
        {
            command.Options.Add(option);
        }

        return (command, parse => new CliArguments(parse, declared));
    }

    /// <summary>True when the option or flag was given.</summary>
    public bool Has(string name) => parse.GetResult(options[name]) is { Implicit: false };

    /// <summary>The option's value, or null.</summary>
    public string? Get(string name) => options[name] is Option<string?> text ? parse.GetValue(text) : null;

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
}
