namespace Cobra.AI.Generation.Constrained;

/// <summary>A compiled JSON grammar: the root node of a sealed, ref-free node graph. Immutable and shareable.</summary>
internal sealed class JsonGrammar
{
    /// <summary>
    /// Most containers (objects and arrays) open at once. Bounds the matcher's stack, makes recursive schemas
    /// finite, and is the nesting bound of the plain JSON mode.
    /// </summary>
    public const int MaxNestingDepth = 16;

    /// <summary>The plain JSON mode (<c>ChatResponseFormat.Json</c>): any JSON object, as OpenAI's json_object.</summary>
    public static readonly JsonGrammar AnyObject = new(ObjectNode.AnyObject);

    public JsonGrammar(GrammarNode root) => Root = root;

    /// <summary>The top-level value.</summary>
    public GrammarNode Root { get; }
}
