using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Modeling.Projection;
using Cobra.AI.Modeling.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling;

/// <summary>
/// The whole Cobra VLM (<c>cobra/models/vlms/cobra.py</c>): vision towers → projector → [image tokens | text
/// tokens] → Mamba. The image is encoded once, in the prefill; decoding steps are text only.
/// </summary>
internal sealed class CobraModel : IDisposable
{
    /// <summary>Assembles the parts (owned from now on); without vision parts the model is text-only.</summary>
    public CobraModel(DinoSigLipEncoder? vision, Projector? projector, MambaForCausalLM languageModel)
    {
        if ((vision is null) != (projector is null))
        {
            throw new ArgumentException("Vision towers and projector come together.");
        }

        if (projector is not null && projector.OutputWidth != languageModel.Config.DModel)
        {
            throw new ArgumentException($"Projector output {projector.OutputWidth} != LLM width {languageModel.Config.DModel}.");
        }

        Vision = vision;
        Projector = projector;
        LanguageModel = languageModel;
    }

    /// <summary>The two vision towers, or null for a text-only model.</summary>
    public DinoSigLipEncoder? Vision { get; }

    /// <summary>Vision features → LLM embeddings, or null for a text-only model.</summary>
    public Projector? Projector { get; }

    /// <summary>The Mamba language model.</summary>
    public MambaForCausalLM LanguageModel { get; }

    /// <summary>Number of parameter values in all parts.</summary>
    public long ParameterCount =>
        LanguageModel.parameters().Sum(p => p.NumberOfElements)
        + (Vision?.parameters().Sum(p => p.NumberOfElements) ?? 0)
        + (Projector?.parameters().Sum(p => p.NumberOfElements) ?? 0);

    /// <summary>Image tokens [B, P, d_model] (model dtype) from the two towers' pixels [B, 3, S, S].</summary>
    public Tensor EncodeImage(Tensor dinoPixels, Tensor siglipPixels, Action<string, Tensor>? trace = null)
    {
        if (Vision is null || Projector is null)
        {
            throw new InvalidOperationException("This model was loaded without vision towers, so it cannot take images.");
        }

        using var _ = torch.no_grad();
        var device = LanguageModel.Device;
        var fused = Vision.Forward(dinoPixels.to(device), siglipPixels.to(device), trace); // [B,P,Dv]
        var projected = Projector.forward(fused);                                // [B,P,D]
        trace?.Invoke("projector.output", projected);
        return projected;
    }

    /// <summary>The LLM input: [image tokens | text embeddings] on dim 1, no separators (upstream's splice).</summary>
    public Tensor InputEmbeddings(Tensor? imageTokens, Tensor textIds)
    {
        using var _ = torch.no_grad();
        var text = LanguageModel.Embed(textIds);                                 // [B,T,D]
        return imageTokens is null ? text : torch.cat([imageTokens.to(text.dtype), text], 1);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Vision?.Dispose();
        Projector?.Dispose();
        LanguageModel.Dispose();
    }
}
