using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation;

/// <summary>
/// A loaded Cobra model with its tokenizer and prompt format: conversation turns in, token ids and text out.
/// Not thread-safe: one caller at a time (the inference engine serialises access).
/// </summary>
internal sealed class CobraPipeline : IDisposable
{
    private CobraPipeline(CobraModelFiles files, CobraTokenizer tokenizer, MambaForCausalLM languageModel)
    {
        Files = files;
        Tokenizer = tokenizer;
        LanguageModel = languageModel;
    }

    /// <summary>Where the model came from.</summary>
    public CobraModelFiles Files { get; }

    /// <summary>The GPT-NeoX tokenizer of the LLM.</summary>
    public CobraTokenizer Tokenizer { get; }

    /// <summary>The Mamba language model.</summary>
    public MambaForCausalLM LanguageModel { get; }

    /// <summary>Loads tokenizer, LLM config and the checkpoint's LLM weights onto <paramref name="device"/>.</summary>
    public static CobraPipeline Load(CobraModelFiles files, Device device, Precision precision)
    {
        TorchRuntime.EnsureInitialized();
        if (!files.LlmBackboneId.EndsWith("zephyr", StringComparison.Ordinal))
        {
            throw new NotSupportedException($"{files.CobraConfigPath}: LLM backbone '{files.LlmBackboneId}' uses upstream's base-model prompt format, which this build does not support; only Zephyr chat models (cobra+3b) are.");
        }

        var tokenizer = CobraTokenizer.FromFile(files.TokenizerPath);
        var config = LanguageModelLoader.ReadConfig(files.LlmConfigPath);
        if (tokenizer.VocabularySize > config.PaddedVocabSize)
        {
            throw new InvalidDataException($"{files.TokenizerPath}: {tokenizer.VocabularySize} tokens do not fit the model's {config.PaddedVocabSize}-row embedding ({files.LlmConfigPath}).");
        }

        using var checkpoint = LanguageModelLoader.OpenCheckpoint(files.CheckpointPath);
        var model = LanguageModelLoader.Load(config, checkpoint, precision.ToScalarType(), device);
        return new CobraPipeline(files, tokenizer, model);
    }

    /// <summary>
    /// Prompt token ids of a conversation (Zephyr format, no BOS), truncated on the right to the model's
    /// <c>llm_max_length</c> as upstream's tokenizer call does.
    /// </summary>
    public IReadOnlyList<int> EncodePrompt(IEnumerable<(string Role, string Content)> turns)
    {
        var ids = Tokenizer.Encode(ZephyrPromptBuilder.Build(turns));
        return ids.Count <= Files.LlmMaxLength ? ids : ids.Take(Files.LlmMaxLength).ToArray();
    }

    /// <summary>Generates a continuation of <paramref name="promptIds"/> (text only).</summary>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, SamplingOptions options, bool keepLogits = false, Action<int>? onToken = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfZero(promptIds.Count, nameof(promptIds));
        using var scope = torch.NewDisposeScope();
        var ids = torch.tensor(promptIds.Select(i => (long)i).ToArray(), device: LanguageModel.Device).unsqueeze(0); // [1,T]
        var embeds = LanguageModel.Embed(ids);                                   // [1,T,D]
        var result = TokenGenerator.Generate(LanguageModel, embeds, options with { EosTokenId = Tokenizer.EosTokenId }, keepLogits, onToken, cancellationToken);
        return result;
    }

    /// <inheritdoc />
    public void Dispose() => LanguageModel.Dispose();
}
