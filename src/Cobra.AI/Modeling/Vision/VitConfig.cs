namespace Cobra.AI.Modeling.Vision;

/// <summary>
/// A timm <c>VisionTransformer</c> as Cobra's towers use it (timm 0.9.10 <c>vision_transformer.py</c>):
/// pre-norm blocks, qkv with bias, exact GELU MLP, LayerNorm eps 1e-6, optional class/register tokens and
/// LayerScale.
/// </summary>
internal sealed record VitConfig
{
    /// <summary>Patch (and patch-conv stride) size in pixels.</summary>
    public int PatchSize { get; init; } = 16;

    /// <summary>Token width.</summary>
    public required int EmbedDim { get; init; }

    /// <summary>Number of blocks.</summary>
    public required int Depth { get; init; }

    /// <summary>Attention heads; head width = EmbedDim / NumHeads.</summary>
    public required int NumHeads { get; init; }

    /// <summary>MLP hidden = int(EmbedDim · MlpRatio), as timm truncates it.</summary>
    public double MlpRatio { get; init; } = 4.0;

    /// <summary>A class token is prepended.</summary>
    public bool ClassToken { get; init; } = true;

    /// <summary>Register tokens after the class token (DINOv2-reg: 4).</summary>
    public int RegTokens { get; init; }

    /// <summary>pos_embed covers only the patches; prefix tokens get none (DINOv2).</summary>
    public bool NoEmbedClass { get; init; }

    /// <summary>LayerScale init value; non-null means ls1/ls2 exist (DINOv2).</summary>
    public double? InitValues { get; init; }

    /// <summary>The image size the checkpoint was trained at (its pos_embed grid).</summary>
    public int PretrainImageSize { get; init; } = 224;

    /// <summary>MLP hidden width.</summary>
    public int MlpHidden => (int)(EmbedDim * MlpRatio);

    /// <summary>Class + register tokens.</summary>
    public int PrefixTokens => (ClassToken ? 1 : 0) + RegTokens;

    /// <summary>Block whose output Cobra uses: the second to last (<c>len(blocks) − 2</c>).</summary>
    public int FeatureBlock => Depth - 2;

    /// <summary>Throws <see cref="InvalidDataException"/> naming <paramref name="source"/> when sizes are inconsistent.</summary>
    public VitConfig Validated(string source)
    {
        if (EmbedDim <= 0 || Depth < 2 || NumHeads <= 0 || EmbedDim % NumHeads != 0 || PatchSize <= 0 || MlpRatio <= 0 || RegTokens < 0)
        {
            throw new InvalidDataException($"{source}: unusable ViT sizes (embed_dim {EmbedDim}, depth {Depth}, num_heads {NumHeads}, patch_size {PatchSize}, mlp_ratio {MlpRatio}); Cobra needs depth >= 2 and embed_dim divisible by num_heads.");
        }

        return this;
    }
}
