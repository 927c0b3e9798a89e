using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Cobra.AI.Server;

/// <summary>
/// Reads <c>messages</c> and stops at the first entry past the limit, so a huge array is refused before it is
/// materialized as objects (the body-size limit already bounds the bytes).
/// </summary>
internal sealed class BoundedMessagesConverter(int limit) : JsonConverter<List<RequestMessage>>
{
    public override List<RequestMessage>? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Null)
        {
            return null;
        }

        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new JsonException("'messages' must be an array.");
        }

        var element = (JsonTypeInfo<RequestMessage>)options.GetTypeInfo(typeof(RequestMessage));
        var messages = new List<RequestMessage>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (messages.Count == limit)
            {
                throw OpenAIErrorException.BadRequest("messages", $"'messages' may hold at most {limit} entries (OpenAIServerOptions.MaxMessages).");
            }

            RequestMessage? message;
            try
            {
                message = JsonSerializer.Deserialize(ref reader, element);
            }
            catch (JsonException e)
            {
                // The nested call reports paths from its own root ("$.role"); put them under the array entry.
                throw new JsonException(e.Message, $"$.messages[{messages.Count}]" + (e.Path ?? "$")[1..], e.LineNumber, e.BytePositionInLine);
            }

            messages.Add(message ?? throw OpenAIErrorException.BadRequest($"messages[{messages.Count}]", $"'messages[{messages.Count}]' must be an object."));
        }

        return messages;
    }

    public override void Write(Utf8JsonWriter writer, List<RequestMessage> value, JsonSerializerOptions options) =>
        throw new NotSupportedException("Requests are only read.");
}
