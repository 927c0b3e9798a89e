using System.Text;

namespace Cobra.AI.Text;

/// <summary>
/// Builds Cobra's chat prompt exactly as upstream <c>ZephyrChatPromptBuilder</c> (cobra+3b):
/// <c>&lt;|user|&gt;\n{Q1}&lt;|endoftext|&gt;\n&lt;|assistant|&gt;\n{A1}&lt;|endoftext|&gt;\n&lt;|user|&gt;\n{Q2}...</c>.
/// </summary>
/// <remarks>
/// Turns alternate, starting with the user. Each message has "&lt;image&gt;" removed and is stripped with
/// Python's rules; the system prompt is always empty. The prompt is returned with no right-strip, so
/// it ends with "\n" after &lt;|assistant|&gt; (upstream's 2024-05-23 fix).
/// </remarks>
internal sealed class ZephyrPromptBuilder
{
    private const string EndOfText = "<|endoftext|>";

    private readonly StringBuilder _prompt = new();
    private int _turnCount;

    /// <summary>Role the next turn must have.</summary>
    public PromptRole NextRole => _turnCount % 2 == 0 ? PromptRole.User : PromptRole.Assistant;

    /// <summary>Builds the prompt for a whole conversation.</summary>
    /// <param name="turns">Turns in order; roles as accepted by <see cref="ParseRole"/>.</param>
    /// <returns>The prompt text.</returns>
    public static string Build(IEnumerable<(string Role, string Content)> turns)
    {
        ArgumentNullException.ThrowIfNull(turns);
        var builder = new ZephyrPromptBuilder();
        foreach ((string role, string content) in turns)
        {
            builder.AddTurn(role, content);
        }

        return builder.GetPrompt();
    }

    /// <summary>Maps upstream and chat-API role names: "user"/"human" and "assistant"/"gpt" (case-insensitive).</summary>
    /// <param name="role">Role name.</param>
    /// <returns>The role.</returns>
    /// <exception cref="ArgumentException">The name is none of those.</exception>
    public static PromptRole ParseRole(string role)
    {
        ArgumentNullException.ThrowIfNull(role);
        return role.ToUpperInvariant() switch
        {
            "USER" or "HUMAN" => PromptRole.User,
            "ASSISTANT" or "GPT" => PromptRole.Assistant,
            _ => throw new ArgumentException($"Unknown role \"{role}\"; expected user/human or assistant/gpt.", nameof(role)),
        };
    }

    /// <summary>Adds a turn given by role name.</summary>
    /// <param name="role">"user"/"human" or "assistant"/"gpt".</param>
    /// <param name="message">The message.</param>
    /// <returns>The text this turn added to the prompt.</returns>
    public string AddTurn(string role, string message) => AddTurn(ParseRole(role), message);

    /// <summary>Adds a turn.</summary>
    /// <param name="role">Must be <see cref="NextRole"/>.</param>
    /// <param name="message">The message.</param>
    /// <returns>The text this turn added to the prompt.</returns>
    /// <exception cref="InvalidOperationException">The turns would not alternate user, assistant, user, ...</exception>
    public string AddTurn(PromptRole role, string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (role != NextRole)
        {
            throw new InvalidOperationException(
                $"Turn {_turnCount + 1} must be {NextRole}, not {role}: turns alternate starting with the user.");
        }

        string text = PythonString.Strip(message.Replace("<image>", string.Empty, StringComparison.Ordinal));
        string wrapped = role == PromptRole.User
            ? (_turnCount == 0 ? string.Empty : "\n") + $"<|user|>\n{text}{EndOfText}\n<|assistant|>\n"
            : (text.Length == 0 ? " " : text) + EndOfText;

        _prompt.Append(wrapped);
        _turnCount++;
        return wrapped;
    }

    /// <summary>The prompt so far, not right-stripped.</summary>
    /// <returns>The prompt text.</returns>
    public string GetPrompt() => _prompt.ToString();

    /// <summary>
    /// The prompt tokens every first turn starts with (the user-turn header), found by encoding two unrelated one-turn
    /// prompts: the point after which the engine snapshots an image's state, and where the state store looks for it.
    /// </summary>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <returns>The shared leading ids (empty when the two prompts share none).</returns>
    public static IReadOnlyList<int> SharedFirstTurnPrefix(CobraTokenizer tokenizer)
    {
        var a = tokenizer.Encode(Build([("user", "A")]));
        var b = tokenizer.Encode(Build([("user", "? 7")]));
        int shared = 0;
        while (shared < a.Count && shared < b.Count && a[shared] == b[shared])
        {
            shared++;
        }

        return a.Take(shared).ToArray();
    }
}
