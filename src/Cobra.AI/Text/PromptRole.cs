namespace Cobra.AI.Text;

/// <summary>Who speaks a turn of a Cobra conversation.</summary>
internal enum PromptRole
{
    /// <summary>The person asking ("human" in upstream Cobra).</summary>
    User,

    /// <summary>The model answering ("gpt" in upstream Cobra).</summary>
    Assistant,
}
