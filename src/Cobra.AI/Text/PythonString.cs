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

    private static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\u001C' and <= '\u001F';
}
