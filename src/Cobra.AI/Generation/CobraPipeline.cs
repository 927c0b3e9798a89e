using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation;

/// <summary>
/// A loaded Cobra model with its tokenizer, prompt format and image preparation: conversation turns and an
/// optional image in, token ids and text out. Not thread-safe: one caller at a time (the inference engine
/// serialises access).
/// </summary>
internal sealed class CobraPipeline : IDisposable
{
    private CobraPipeline(CobraModelFiles files, CobraTokenizer tokenizer, CobraModel model, ImageSettings? images)
    {
        Files = files;
        Tokenizer = tokenizer;
        Model = model;
        Images = images;
    }

    /// <summary>Where the model came from.</summary>
    public CobraModelFiles Files { get; }

    /// <summary>The GPT-NeoX tokenizer of the LLM.</summary>
    public CobraTokenizer Tokenizer { get; }

    /// <summary>Vision towers, projector and language model.</summary>
    public CobraModel Model { get; }

    /// <summary>How images are prepared; null when the model folder has no vision towers.</summary>
    public ImageSettings? Images { get; }

    /// <summary>
    /// Loads tokenizer, LLM, vision towers and projector onto <paramref name="device"/>; the managed CPU
    /// kernels run unless <paramref name="useManagedCpuKernels"/> is false or <c>COBRA_MANAGED_KERNELS=0</c>.
    /// </summary>
    public static CobraPipeline Load(CobraModelFiles files, Device device, Precision precision, bool useManagedCpuKernels = true)
    {
        TorchRuntime.EnsureInitialized();
        if (!files.LlmBackboneId.EndsWith("zephyr", StringComparison.Ordinal))
        {
            throw new NotSupportedException($"{files.CobraConfigPath}: LLM backbone '{files.LlmBackboneId}' uses upstream's base-model prompt format, which this build does not support; only Zephyr chat models (cobra+3b) are.");
        }

        var tokenizer = CobraTokenizer.FromFile(files.TokenizerPath);
        var (model, images) = CobraModelLoader.Load(files, precision.ToScalarType(), device);
        ManagedKernels.Configure(model, ManagedKernels.Resolve(useManagedCpuKernels));
        if (tokenizer.VocabularySize > model.LanguageModel.Config.PaddedVocabSize)
        {
            model.Dispose();
            throw new InvalidDataException($"{files.TokenizerPath}: {tokenizer.VocabularySize} tokens do not fit the model's {model.LanguageModel.Config.PaddedVocabSize}-row embedding ({files.LlmConfigPath}).");
        }

        return new CobraPipeline(files, tokenizer, model, images);
    }

    /// <summary>
    /// Prompt token ids of a conversation (Zephyr format, no BOS), truncated on the right to the model's
    /// <c>llm_max_length</c> as upstream's tokenizer call does (image tokens are not counted).
    /// </summary>
    public IReadOnlyList<int> EncodePrompt(IEnumerable<(string Role, string Content)> turns)
    {
        var ids = Tokenizer.Encode(ZephyrPromptBuilder.Build(turns));
        return ids.Count <= Files.LlmMaxLength ? ids : ids.Take(Files.LlmMaxLength).ToArray();
    }

    /// <summary>The two towers' normalised pixels [1, 3, S, S] for an RGB image, per the model's strategy.</summary>
    public (Tensor Dino, Tensor SigLip) PreparePixels(RgbImage image)
    {
        var settings = Images ?? throw new InvalidOperationException($"The model in '{Files.CobraConfigPath}' was loaded without vision towers (no timm files next to it), so it cannot take images.");
        Tensor Tower(TowerNormalization tower) =>
            CobraImageTransform.ToTensor(CobraImageTransform.Resize(image, settings.ImageSize, settings.ResizeStrategy, tower), tower);
        return (Tower(settings.Dino), Tower(settings.SigLip));
    }

    /// <summary>Number of LLM positions an image occupies.</summary>
    public int ImageTokenCount => Model.Vision?.PatchTokens ?? 0;

    /// <summary>Generates a continuation of <paramref name="promptIds"/>, after the image when one is given.</summary>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, RgbImage? image, SamplingOptions options, bool keepLogits = false, Action<int>? onToken = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfZero(promptIds.Count, nameof(promptIds));
        using var scope = torch.NewDisposeScope();
        Tensor? imageTokens = null;
        if (image is not null)
        {
            var (dino, siglip) = PreparePixels(image);
            imageTokens = Model.EncodeImage(dino, siglip);                       // [1,P,D]
        }

        var ids = torch.tensor(promptIds.Select(i => (long)i).ToArray(), device: Model.LanguageModel.Device).unsqueeze(0); // [1,T]
        var embeds = Model.InputEmbeddings(imageTokens, ids);                     // [1,P+T,D]
        return TokenGenerator.Generate(Model.LanguageModel, embeds, options with { EosTokenId = Tokenizer.EosTokenId }, keepLogits, onToken, cancellationToken);
    }

    /// <inheritdoc />
    public void Dispose() => Model.Dispose();
}
