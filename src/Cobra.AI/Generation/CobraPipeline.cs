using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation;

/// <summary>An image resized for each vision tower (S × S RGB).</summary>
/// <param name="Dino">The DINOv2 tower's input.</param>
/// <param name="SigLip">The SigLIP tower's input.</param>
internal sealed record TowerImages(RgbImage Dino, RgbImage SigLip);

/// <summary>
/// A loaded Cobra model with its tokenizer, prompt format and image preparation: conversation turns and an
/// optional image in, token ids and text out. Not thread-safe: one caller at a time (the inference engine
/// serialises access).
/// </summary>
internal sealed class CobraPipeline : IDisposable
{
    private CobraPipeline(string source, int llmMaxLength, CobraTokenizer tokenizer, CobraModel model, ImageSettings? images)
    {
        Source = source;
        LlmMaxLength = llmMaxLength;
        Tokenizer = tokenizer;
        Model = model;
        Images = images;
    }

    /// <summary>Where the model came from (its Cobra config file), for messages.</summary>
    public string Source { get; }

    /// <summary>Prompt tokens kept (upstream's <c>llm_max_length</c>).</summary>
    public int LlmMaxLength { get; }

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

        return new CobraPipeline(files.CobraConfigPath, files.LlmMaxLength, tokenizer, model, images);
    }

    /// <summary>A pipeline over a model built in memory (benchmarks with random weights); owns <paramref name="model"/>.</summary>
    public static CobraPipeline FromModel(CobraModel model, CobraTokenizer tokenizer, ImageSettings? images, int llmMaxLength = 2048) =>
        new("(in-memory model)", llmMaxLength, tokenizer, model, images);

    /// <summary>
    /// Prompt token ids of a conversation (Zephyr format, no BOS), truncated on the right to the model's
    /// <c>llm_max_length</c> as upstream's tokenizer call does (image tokens are not counted).
    /// </summary>
    public IReadOnlyList<int> EncodePrompt(IEnumerable<(string Role, string Content)> turns)
    {
        var ids = Tokenizer.Encode(ZephyrPromptBuilder.Build(turns));
        return ids.Count <= LlmMaxLength ? ids : ids.Take(LlmMaxLength).ToArray();
    }

    /// <summary>
    /// The image resized for each tower (S × S RGB, per the model's strategy): what a request carries while it
    /// waits, instead of the decoded original (up to tens of MB). Runs on the caller's thread; no tensors.
    /// </summary>
    public TowerImages ResizeForTowers(RgbImage image)
    {
        var settings = Images ?? throw new InvalidOperationException($"The model in '{Source}' was loaded without vision towers (no timm files next to it), so it cannot take images.");
        return new TowerImages(
            CobraImageTransform.Resize(image, settings.ImageSize, settings.ResizeStrategy, settings.Dino),
            CobraImageTransform.Resize(image, settings.ImageSize, settings.ResizeStrategy, settings.SigLip));
    }

    /// <summary>The two towers' normalised pixels [1, 3, S, S] from their resized images.</summary>
    public (Tensor Dino, Tensor SigLip) PreparePixels(TowerImages images)
    {
        var settings = Images ?? throw new InvalidOperationException($"The model in '{Source}' was loaded without vision towers (no timm files next to it), so it cannot take images.");
        return (CobraImageTransform.ToTensor(images.Dino, settings.Dino), CobraImageTransform.ToTensor(images.SigLip, settings.SigLip));
    }

    /// <summary>The two towers' normalised pixels [1, 3, S, S] for an RGB image, per the model's strategy.</summary>
    public (Tensor Dino, Tensor SigLip) PreparePixels(RgbImage image) => PreparePixels(ResizeForTowers(image));

    /// <summary>Number of LLM positions an image occupies.</summary>
    public int ImageTokenCount => Model.Vision?.PatchTokens ?? 0;

    /// <inheritdoc />
    public void Dispose() => Model.Dispose();
}
