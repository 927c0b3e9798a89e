namespace Cobra.AI.Text;

/// <summary>Python <c>str</c> behaviour that upstream Cobra relies on and .NET spells differently.</summary>
internal static class PythonString
{
    /// <summary>
    /// Python's <c>str.strip()</c>: removes leading and trailing characters for which <c>str.isspace()</c>
    /// is true. That is .NET's white space plus U+001C..U+001F (file/group/record/unit separators),
    /// which Python counts as white space and <see cref="string.Trim()"/> does not.
    /// </summary>
    /// <param name="text">Text to strip.</param>
    /// <returns>The stripped text.</returns>
    public static string Strip(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int start = 0, end = text.Length;
        while (start < end && IsSpace(text[start]))
        {
            start++;
        }

        while (end > start && IsSpace(text[end - 1]))
        {
            end--;
        }

        return text[start..end];
    }

    /// <summary>Python's <c>str.rstrip()</c>.</summary>
    /// <param name="text">Text to strip.</param>
    /// <returns>The text without trailing white space.</returns>
    public static string StripEnd(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int end = text.Length;
        while (end > 0 && IsSpace(text[end - 1]))
        {
            end--;
        }

        return text[..end];
    }

    /// <summary>Python's <c>str.isspace()</c> for one character.</summary>
    /// <param name="c">The character.</param>
    /// <returns>True for white space.</returns>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\u001C' and <= '\u001F';
}
