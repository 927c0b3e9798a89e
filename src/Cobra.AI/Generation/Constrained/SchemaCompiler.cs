using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Cobra.AI.Generation.Constrained;

/// <summary>
/// Compiles a JSON Schema (the subset Microsoft.Extensions.AI emits for ordinary records and classes) into a
/// <see cref="JsonGrammar"/>. A keyword that would constrain values in a way the grammar cannot enforce is refused
/// with <see cref="NotSupportedException"/> naming it and its location; a malformed schema gives
/// <see cref="ArgumentException"/>.
/// </summary>
/// <remarks>
/// Enforced: type (and type lists), properties, required, additionalProperties, items, minItems, maxItems, enum,
/// const, minLength, maxLength, anyOf/oneOf whose branches start with different characters, $ref to "#..." JSON
/// pointers (recursion included), $defs/definitions. The grammar produces a subset of the valid values: properties
/// in declared order, no undeclared properties (valid whatever additionalProperties says, except a dictionary:
/// an object with no declared properties takes keys whose values match additionalProperties), compact whitespace,
/// numbers without exponent, at most <see cref="MaxIntegerDigits"/> integer digits for "integer" (fits an int) and
/// <see cref="MaxNumberDigits"/> integer and fraction digits for "number".
/// </remarks>
internal sealed class SchemaCompiler
{
    /// <summary>Digits of an "integer": any such value fits System.Int32.</summary>
    public const int MaxIntegerDigits = 9;

    /// <summary>Integer and fraction digits (each) of a "number": fits double, float and decimal.</summary>
    public const int MaxNumberDigits = 15;

    private static readonly HashSet<string> Annotations = new(StringComparer.Ordinal)
    {
        "$schema", "$comment", "$anchor", "$defs", "definitions", "title", "description", "default", "examples",
        "deprecated", "readOnly", "writeOnly", "contentEncoding", "contentMediaType",
    };

    private static readonly HashSet<string> Supported = new(StringComparer.Ordinal)
    {
        "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum", "const",
        "minLength", "maxLength", "anyOf", "oneOf", "$ref", "$id", "format",
    };

    private static readonly string[] TypeNames = ["object", "array", "string", "integer", "number", "boolean", "null"];

    private static readonly JsonWriterOptions LiteralWriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly JsonElement _root;
    private readonly Dictionary<string, GrammarNode> _memo = new(StringComparer.Ordinal);

    private SchemaCompiler(JsonElement root) => _root = root;

    /// <summary>Compiles a schema.</summary>
    /// <param name="schema">The schema (an object or a boolean).</param>
    /// <returns>The grammar.</returns>
    /// <exception cref="NotSupportedException">A keyword cannot be enforced; the message names it and its JSON pointer.</exception>
    /// <exception cref="ArgumentException">The schema is malformed or admits no value.</exception>
    public static JsonGrammar Compile(JsonElement schema)
    {
        var compiler = new SchemaCompiler(schema);
        GrammarNode root = compiler.CompileAt(schema, "#");
        root = Seal(root);
        if (root.MinDepth > JsonGrammar.MaxNestingDepth)
        {
            throw new ArgumentException(
                $"The JSON schema admits no value within {JsonGrammar.MaxNestingDepth} nested objects/arrays (a required property or minItems that recurses forever, a false schema, or an empty enum).",
                nameof(schema));
        }

        return new JsonGrammar(root);
    }

    private GrammarNode CompileAt(JsonElement schema, string path)
    {
        if (_memo.TryGetValue(path, out GrammarNode? known))
        {
            return known;
        }

        switch (schema.ValueKind)
        {
            case JsonValueKind.True:
                return _memo[path] = AnyNode.Instance;
            case JsonValueKind.False:
                return _memo[path] = new NeverNode(path);
            case JsonValueKind.Object:
                break;
            default:
                throw Invalid(path, $"a schema must be an object or a boolean, not {schema.ValueKind}");
        }

        foreach (JsonProperty keyword in schema.EnumerateObject())
        {
            if (!Annotations.Contains(keyword.Name) && !Supported.Contains(keyword.Name))
            {
                throw Unsupported(keyword.Name, path);
            }
        }

        if (schema.TryGetProperty("$id", out _) && path != "#")
        {
            // A nested $id changes how refs resolve; only the root's is harmless.
            throw Unsupported("$id", path);
        }

        if (schema.TryGetProperty("$ref", out JsonElement reference))
        {
            return CompileRef(schema, path, reference);
        }

        bool hasAnyOf = schema.TryGetProperty("anyOf", out JsonElement anyOf);
        bool hasOneOf = schema.TryGetProperty("oneOf", out JsonElement oneOf);
        if (hasAnyOf || hasOneOf)
        {
            return CompileCombinator(schema, path, hasAnyOf, anyOf, hasOneOf, oneOf);
        }

        if (schema.TryGetProperty("enum", out _) || schema.TryGetProperty("const", out _))
        {
            return _memo[path] = CompileLiterals(schema, path);
        }

        return CompileTyped(schema, path);
    }

    private RefNode CompileRef(JsonElement schema, string path, JsonElement reference)
    {
        foreach (JsonProperty keyword in schema.EnumerateObject())
        {
            // Siblings of $ref apply too (2020-12); only trivially true ones ("items": {}) can be ignored.
            if (keyword.Name != "$ref" && keyword.Name != "$id" && !Annotations.Contains(keyword.Name) && !IsTrivial(keyword.Name, keyword.Value))
            {
                throw new NotSupportedException(
                    $"JSON schema keyword '{keyword.Name}' next to '$ref' at '{path}' is not supported: constrained decoding cannot enforce both together.");
            }
        }

        if (reference.ValueKind != JsonValueKind.String)
        {
            throw Invalid(path + "/$ref", "$ref must be a string");
        }

        string target = reference.GetString()!;
        if (!target.StartsWith('#') || (target.Length > 1 && target[1] != '/'))
        {
            throw new NotSupportedException(
                $"JSON schema '$ref' value '{target}' at '{path}' is not supported: only references into the same schema ('#', '#/$defs/...') are.");
        }

        (JsonElement targetSchema, string canonical) = Resolve(target, path);
        var node = new RefNode(path, canonical);
        _memo[path] = node;
        node.Resolved = CompileAt(targetSchema, canonical);
        return node;
    }

    private static bool IsTrivial(string keyword, JsonElement value) =>
        keyword is "items" or "additionalProperties"
        && (value.ValueKind == JsonValueKind.True
            || (value.ValueKind == JsonValueKind.Object && value.EnumerateObject().All(p => Annotations.Contains(p.Name))));

    private UnionNode CompileCombinator(JsonElement schema, string path, bool hasAnyOf, JsonElement anyOf, bool hasOneOf, JsonElement oneOf)
    {
        if (hasAnyOf && hasOneOf)
        {
            throw new NotSupportedException($"JSON schema keywords 'anyOf' and 'oneOf' together at '{path}' are not supported.");
        }

        string keyword = hasAnyOf ? "anyOf" : "oneOf";
        foreach (JsonProperty other in schema.EnumerateObject())
        {
            if (other.Name != keyword && other.Name != "$id" && !Annotations.Contains(other.Name))
            {
                throw new NotSupportedException(
                    $"JSON schema keyword '{other.Name}' next to '{keyword}' at '{path}' is not supported: constrained decoding cannot enforce both together.");
            }
        }

        JsonElement branches = hasAnyOf ? anyOf : oneOf;
        if (branches.ValueKind != JsonValueKind.Array || branches.GetArrayLength() == 0)
        {
            throw Invalid($"{path}/{keyword}", $"{keyword} must be a non-empty array of schemas");
        }

        var union = new UnionNode(path, hasAnyOf ? UnionKind.AnyOf : UnionKind.OneOf, keyword);
        _memo[path] = union;
        int i = 0;
        foreach (JsonElement branch in branches.EnumerateArray())
        {
            union.Alternatives.Add(CompileAt(branch, $"{path}/{keyword}/{i++}"));
        }

        return union;
    }

    private GrammarNode CompileTyped(JsonElement schema, string path)
    {
        List<string> types = ReadTypes(schema, path);
        bool integerOnly = types.Contains("integer") && !types.Contains("number");

        // Create every shell first and memoise the result, so recursive refs inside children find it.
        var alternatives = new List<GrammarNode>();
        ObjectNode? objectNode = null;
        ArrayNode? arrayNode = null;
        var literals = new List<byte[]>();
        foreach (string type in types)
        {
            switch (type)
            {
                case "object":
                    alternatives.Add(objectNode = new ObjectNode(path));
                    break;
                case "array":
                    alternatives.Add(arrayNode = new ArrayNode(path));
                    break;
                case "string":
                    alternatives.Add(CompileString(schema, path));
                    break;
                case "integer" when integerOnly:
                case "number":
                    alternatives.Add(new NumberNode(path, integerOnly));
                    break;
                case "boolean":
                    literals.Add("true"u8.ToArray());
                    literals.Add("false"u8.ToArray());
                    break;
                case "null":
                    literals.Add("null"u8.ToArray());
                    break;
            }
        }

        if (literals.Count > 0)
        {
            alternatives.Add(LiteralNode.Create(path, literals));
        }

        GrammarNode result;
        if (alternatives.Count == 1)
        {
            result = alternatives[0];
        }
        else
        {
            var union = new UnionNode(path, UnionKind.Type, "type");
            union.Alternatives.AddRange(alternatives);
            result = union;
        }

        _memo[path] = result;
        if (objectNode is not null)
        {
            FillObject(objectNode, schema, path);
        }

        if (arrayNode is not null)
        {
            FillArray(arrayNode, schema, path);
        }

        return result;
    }

    private static GrammarNode CompileString(JsonElement schema, string path)
    {
        (int min, int max) = ReadRange(schema, path, "minLength", "maxLength");
        if (!schema.TryGetProperty("format", out JsonElement format))
        {
            return new StringNode(path, min, max);
        }

        string? name = format.ValueKind == JsonValueKind.String ? format.GetString() : null;
        if (name is null || !FormatNode.IsSupported(name))
        {
            throw new NotSupportedException(
                $"JSON schema keyword 'format' ('{format.GetRawText()}') at '{path}' is not supported: constrained decoding enforces only uuid, date and date-time.");
        }

        if (schema.TryGetProperty("minLength", out _) || schema.TryGetProperty("maxLength", out _))
        {
            throw new NotSupportedException($"JSON schema keyword 'format' with minLength/maxLength at '{path}' is not supported.");
        }

        return FormatNode.Create(path, name);
    }

    private static List<string> ReadTypes(JsonElement schema, string path)
    {
        var types = new List<string>();
        if (schema.TryGetProperty("type", out JsonElement type))
        {
            IEnumerable<JsonElement> names = type.ValueKind == JsonValueKind.Array ? type.EnumerateArray() : [type];
            foreach (JsonElement name in names)
            {
                string? text = name.ValueKind == JsonValueKind.String ? name.GetString() : null;
                if (text is null || Array.IndexOf(TypeNames, text) < 0)
                {
                    throw Invalid(path + "/type", $"'{name.GetRawText()}' is not a JSON schema type ({string.Join(", ", TypeNames)})");
                }

                if (!types.Contains(text))
                {
                    types.Add(text);
                }
            }

            if (types.Count == 0)
            {
                throw Invalid(path + "/type", "the type list is empty");
            }

            return types;
        }

        // No "type": every type is valid, and keywords only constrain their own type, so generating the types
        // whose keywords appear (or any value when none do) stays within the schema.
        bool Has(string keyword) => schema.TryGetProperty(keyword, out _);
        if (Has("properties") || Has("required") || Has("additionalProperties"))
        {
            types.Add("object");
        }

        if (Has("items") || Has("minItems") || Has("maxItems"))
        {
            types.Add("array");
        }

        if (Has("minLength") || Has("maxLength") || Has("format"))
        {
            types.Add("string");
        }

        if (types.Count == 0)
        {
            types.AddRange(["object", "array", "string", "number", "boolean", "null"]);
        }

        return types;
    }

    private void FillObject(ObjectNode node, JsonElement schema, string path)
    {
        var required = new List<string>();
        if (schema.TryGetProperty("required", out JsonElement requiredElement))
        {
            if (requiredElement.ValueKind != JsonValueKind.Array || requiredElement.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
            {
                throw Invalid(path + "/required", "required must be an array of strings");
            }

            required.AddRange(requiredElement.EnumerateArray().Select(e => e.GetString()!).Distinct(StringComparer.Ordinal));
        }

        bool hasAdditional = schema.TryGetProperty("additionalProperties", out JsonElement additional);
        if (hasAdditional && additional.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Object))
        {
            throw Invalid(path + "/additionalProperties", "additionalProperties must be a schema");
        }

        var properties = new List<PropertyRule>();
        var declared = new HashSet<string>(StringComparer.Ordinal);
        if (schema.TryGetProperty("properties", out JsonElement propertiesElement))
        {
            if (propertiesElement.ValueKind != JsonValueKind.Object)
            {
                throw Invalid(path + "/properties", "properties must be an object");
            }

            foreach (JsonProperty property in propertiesElement.EnumerateObject())
            {
                if (!declared.Add(property.Name))
                {
                    throw Invalid(path + "/properties", $"property '{property.Name}' is declared twice");
                }

                GrammarNode value = CompileAt(property.Value, $"{path}/properties/{EscapeToken(property.Name)}");
                properties.Add(new PropertyRule(property.Name, KeyBytes(property.Name), value, required.Contains(property.Name)));
            }
        }

        // A required name without a declaration must still be written; its value is whatever additionalProperties allows.
        foreach (string name in required.Where(r => !declared.Contains(r)))
        {
            if (hasAdditional && additional.ValueKind == JsonValueKind.False)
            {
                throw Invalid(path + "/required", $"'{name}' is required but not declared, and additionalProperties is false");
            }

            GrammarNode value = hasAdditional ? CompileAt(additional, path + "/additionalProperties") : AnyNode.Instance;
            properties.Add(new PropertyRule(name, KeyBytes(name), value, required: true));
        }

        node.Properties = properties.ToArray();
        if (properties.Count == 0)
        {
            // No declared properties: a dictionary (additionalProperties schema), a free object, or only {}.
            node.MapValue = !hasAdditional ? AnyNode.Instance
                : additional.ValueKind == JsonValueKind.False ? null
                : CompileAt(additional, path + "/additionalProperties");
        }

        node.Seal();
    }

    private void FillArray(ArrayNode node, JsonElement schema, string path)
    {
        (node.Min, node.Max) = ReadRange(schema, path, "minItems", "maxItems");
        if (schema.TryGetProperty("items", out JsonElement items))
        {
            if (items.ValueKind == JsonValueKind.Array)
            {
                throw new NotSupportedException($"JSON schema keyword 'items' with an array of schemas (tuples) at '{path}/items' is not supported.");
            }

            node.Items = CompileAt(items, path + "/items");
        }
    }

    private static (int Min, int Max) ReadRange(JsonElement schema, string path, string minKeyword, string maxKeyword)
    {
        int min = ReadCount(schema, path, minKeyword) ?? 0;
        int max = ReadCount(schema, path, maxKeyword) ?? int.MaxValue;
        if (min > max)
        {
            throw Invalid(path, $"{minKeyword} {min} is greater than {maxKeyword} {max}");
        }

        return (min, max);
    }

    private static int? ReadCount(JsonElement schema, string path, string keyword)
    {
        if (!schema.TryGetProperty(keyword, out JsonElement value))
        {
            return null;
        }

        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDecimal(out decimal number) || number < 0 || number != decimal.Truncate(number))
        {
            throw Invalid($"{path}/{keyword}", $"{keyword} must be a non-negative integer");
        }

        // Counts past int.MaxValue cannot be reached by any answer anyway.
        return number > int.MaxValue - 1 ? int.MaxValue - 1 : (int)number;
    }

    private LiteralNode CompileLiterals(JsonElement schema, string path)
    {
        foreach (JsonProperty keyword in schema.EnumerateObject())
        {
            if (keyword.Name is not ("enum" or "const" or "type" or "minLength" or "maxLength" or "$id") && !Annotations.Contains(keyword.Name))
            {
                throw new NotSupportedException(
                    $"JSON schema keyword '{keyword.Name}' next to 'enum'/'const' at '{path}' is not supported: constrained decoding cannot enforce both together.");
            }
        }

        List<JsonElement> values;
        if (schema.TryGetProperty("enum", out JsonElement enumElement))
        {
            if (enumElement.ValueKind != JsonValueKind.Array)
            {
                throw Invalid(path + "/enum", "enum must be an array");
            }

            values = enumElement.EnumerateArray().ToList();
            if (schema.TryGetProperty("const", out JsonElement constElement))
            {
                values = values.Where(v => JsonElement.DeepEquals(v, constElement)).ToList();
            }
        }
        else
        {
            values = [schema.GetProperty("const")];
        }

        List<string>? types = schema.TryGetProperty("type", out _) ? ReadTypes(schema, path) : null;
        (int minLength, int maxLength) = ReadRange(schema, path, "minLength", "maxLength");
        var texts = new List<byte[]>();
        foreach (JsonElement value in values)
        {
            if ((types is null || types.Contains(TypeOf(value)) || (TypeOf(value) == "integer" && types.Contains("number")))
                && (value.ValueKind != JsonValueKind.String || FitsLength(value.GetString()!, minLength, maxLength)))
            {
                byte[] text = Serialize(value);
                if (!texts.Any(t => t.AsSpan().SequenceEqual(text)))
                {
                    texts.Add(text);
                }
            }
        }

        // No admissible value: MinDepth stays unreachable, so the value is never started (or the schema is refused).
        var node = LiteralNode.Create(path, texts);
        if (texts.Count == 0)
        {
            node.MinDepth = GrammarNode.Unreachable;
        }

        return node;
    }

    private static string TypeOf(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => value.TryGetDecimal(out decimal d) && d == decimal.Truncate(d) ? "integer" : "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        _ => "null",
    };

    private static bool FitsLength(string text, int min, int max)
    {
        // Validators count UTF-16 units, code points or text elements: the literal must fit whichever they use.
        int codePoints = text.EnumerateRunes().Count();
        int elements = new StringInfo(text).LengthInTextElements;
        return text.Length <= max && codePoints <= max && Math.Min(codePoints, elements) >= min;
    }

    private static byte[] Serialize(JsonElement value)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, LiteralWriterOptions))
        {
            value.WriteTo(writer);
        }

        return buffer.ToArray();
    }

    private static byte[] KeyBytes(string name)
    {
        byte[] escaped = JsonEncodedText.Encode(name, JavaScriptEncoder.UnsafeRelaxedJsonEscaping).EncodedUtf8Bytes.ToArray();
        return [.. escaped, (byte)'"'];
    }

    private (JsonElement Schema, string Canonical) Resolve(string pointer, string path)
    {
        JsonElement current = _root;
        var canonical = new StringBuilder("#");
        if (pointer.Length > 1)
        {
            foreach (string raw in pointer[2..].Split('/'))
            {
                string token = Uri.UnescapeDataString(raw).Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
                if (current.ValueKind == JsonValueKind.Object && current.TryGetProperty(token, out JsonElement next))
                {
                    current = next;
                }
                else if (current.ValueKind == JsonValueKind.Array && int.TryParse(token, NumberStyles.None, CultureInfo.InvariantCulture, out int index)
                    && index < current.GetArrayLength())
                {
                    current = current[index];
                }
                else
                {
                    throw Invalid(path + "/$ref", $"'{pointer}' does not point into the schema");
                }

                canonical.Append('/').Append(EscapeToken(token));
            }
        }

        return (current, canonical.ToString());
    }

    private static string EscapeToken(string token) => token.Replace("~", "~0", StringComparison.Ordinal).Replace("/", "~1", StringComparison.Ordinal);

    private static NotSupportedException Unsupported(string keyword, string path) =>
        new($"JSON schema keyword '{keyword}' at '{path}' is not supported: constrained decoding cannot enforce it, and ignoring it would not guarantee a valid answer.");

    private static ArgumentException Invalid(string path, string problem) => new($"Invalid JSON schema at '{path}': {problem}.", "schema");

    // ---- Sealing: resolve refs, flatten unions, compute nesting needs ----

    private static GrammarNode Seal(GrammarNode root)
    {
        root = Deref(root);
        var all = new List<GrammarNode>();
        var seen = new HashSet<GrammarNode>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<GrammarNode>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            GrammarNode node = pending.Pop();
            if (!seen.Add(node))
            {
                continue;
            }

            all.Add(node);
            switch (node)
            {
                case ObjectNode o:
                    foreach (PropertyRule p in o.Properties)
                    {
                        p.Node = Deref(p.Node);
                        pending.Push(p.Node);
                    }

                    if (o.MapValue is not null)
                    {
                        o.MapValue = Deref(o.MapValue);
                        pending.Push(o.MapValue);
                    }

                    break;
                case ArrayNode a:
                    a.Items = Deref(a.Items);
                    pending.Push(a.Items);
                    break;
                case UnionNode u:
                    for (int i = 0; i < u.Alternatives.Count; i++)
                    {
                        u.Alternatives[i] = Deref(u.Alternatives[i]);
                        pending.Push(u.Alternatives[i]);
                    }

                    break;
            }
        }

        foreach (UnionNode union in all.OfType<UnionNode>())
        {
            SealUnion(union, []);
        }

        ComputeMinDepth(all);
        ComputeMinBytes(all);
        return root;
    }

    private static GrammarNode Deref(GrammarNode node)
    {
        int hops = 0;
        while (node is RefNode r)
        {
            if (++hops > 1000 || r.Resolved is null)
            {
                throw Invalid(r.Path, $"'$ref' to '{r.Target}' only refers to itself");
            }

            node = r.Resolved;
        }

        return node;
    }

    private static void SealUnion(UnionNode union, HashSet<UnionNode> inProgress)
    {
        if (union.Sealed)
        {
            return;
        }

        if (!inProgress.Add(union))
        {
            throw Invalid(union.Path, $"'{union.Keyword}' contains itself without any object or array in between");
        }

        // Flatten nested unions, drop false branches, merge literal sets and number kinds.
        var flat = new List<GrammarNode>();
        foreach (GrammarNode alternative in union.Alternatives)
        {
            if (alternative is UnionNode inner)
            {
                SealUnion(inner, inProgress);
                flat.AddRange(inner.Alternatives);
            }
            else if (alternative.Kind != GrammarKind.Never)
            {
                flat.Add(alternative);
            }
        }

        bool oneOf = union.UnionKind == UnionKind.OneOf;
        var merged = new List<GrammarNode>();
        var literalTexts = new List<byte[]>();
        string overlap = $"JSON schema '{union.Keyword}' at '{union.Path}' is not supported: its branches overlap";
        foreach (GrammarNode alternative in flat)
        {
            if (alternative is LiteralNode literal)
            {
                foreach (byte[] text in literal.Texts)
                {
                    if (literalTexts.Any(t => t.AsSpan().SequenceEqual(text)))
                    {
                        if (oneOf)
                        {
                            throw new NotSupportedException($"{overlap} (a value matches two branches).");
                        }

                        continue;
                    }

                    literalTexts.Add(text);
                }
            }
            else if (alternative is AnyNode && !oneOf)
            {
                // anyOf with an unconstrained branch: any value.
                merged.Clear();
                literalTexts.Clear();
                merged.Add(alternative);
                break;
            }
            else if (alternative is NumberNode number && !oneOf && merged.OfType<NumberNode>().FirstOrDefault() is NumberNode existing)
            {
                if (existing.Integer && !number.Integer)
                {
                    merged[merged.IndexOf(existing)] = number;
                }
            }
            else
            {
                merged.Add(alternative);
            }
        }

        if (literalTexts.Count > 0 && !(merged.Count == 1 && merged[0] is AnyNode))
        {
            merged.Add(LiteralNode.Create(union.Path, literalTexts));
        }

        Array.Fill(union.ByFirstByte, (sbyte)-1);
        for (int i = 0; i < merged.Count; i++)
        {
            foreach (byte b in FirstBytes(merged[i]))
            {
                if (union.ByFirstByte[b] >= 0)
                {
                    throw new NotSupportedException(
                        $"{overlap}: two of them can start with '{(char)b}', and constrained decoding only tells branches apart by their first character (e.g. object | null, string | number).");
                }

                union.ByFirstByte[b] = (sbyte)i;
            }
        }

        union.Alternatives.Clear();
        union.Alternatives.AddRange(merged);
        union.Sealed = true;
        inProgress.Remove(union);
    }

    private static IEnumerable<byte> FirstBytes(GrammarNode node) => node switch
    {
        ObjectNode => "{"u8.ToArray(),
        ArrayNode => "["u8.ToArray(),
        StringNode or FormatNode => "\""u8.ToArray(),
        NumberNode => "-0123456789"u8.ToArray(),
        LiteralNode l => l.Trie.RootBytes(),
        AnyNode => "{[\"-0123456789tfn"u8.ToArray(),
        _ => [],
    };

    private static void ComputeMinBytes(List<GrammarNode> all)
    {
        // Least fixed point of the shortest compact serialisation; objects/arrays/unions start unknown.
        bool changed = true;
        while (changed)
        {
            changed = false;
            foreach (GrammarNode node in all)
            {
                long bytes = node switch
                {
                    ObjectNode o => 2L + Math.Max(0, o.Properties.Count(p => p.Required) - 1)
                        + o.Properties.Where(p => p.Required).Sum(p => 2L + p.KeyBytes.Length + p.Node.MinBytes),
                    ArrayNode a => 2L + ((long)a.Min * a.Items.MinBytes) + Math.Max(0, a.Min - 1),
                    UnionNode u => u.Alternatives.Select(x => (long)x.MinBytes).DefaultIfEmpty(GrammarNode.Unreachable).Min(),
                    _ => node.MinBytes,
                };
                int capped = (int)Math.Min(bytes, GrammarNode.Unreachable);
                if (capped < node.MinBytes)
                {
                    node.MinBytes = capped;
                    changed = true;
                }
            }
        }

        foreach (ObjectNode o in all.OfType<ObjectNode>())
        {
            o.ComputeCosts();
        }
    }

    private static void ComputeMinDepth(List<GrammarNode> all)
    {
        // Least fixed point: scalars need 0, containers 1 + their required parts; recursion without an exit stays unreachable.
        bool changed = true;
        while (changed)
        {
            changed = false;
            foreach (GrammarNode node in all)
            {
                int depth = node switch
                {
                    ObjectNode o => 1 + o.Properties.Where(p => p.Required).Select(p => p.Node.MinDepth).DefaultIfEmpty(0).Max(),
                    ArrayNode a => 1 + (a.Min > 0 ? a.Items.MinDepth : 0),
                    UnionNode u => u.Alternatives.Select(x => x.MinDepth).DefaultIfEmpty(GrammarNode.Unreachable).Min(),
                    _ => node.MinDepth,
                };
                depth = Math.Min(depth, GrammarNode.Unreachable);
                if (depth < node.MinDepth)
                {
                    node.MinDepth = depth;
                    changed = true;
                }
            }
        }
    }
}
