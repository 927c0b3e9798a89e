using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Cobra.AI.Modeling.Vision;

/// <summary>
/// timm's <c>VisionTransformer</c> up to the features Cobra takes: patch embedding, [cls | registers |
/// patches] tokens with absolute position embeddings, pre-norm blocks. State-dict keys follow timm:
/// cls_token, reg_token, pos_embed, patch_embed.proj.*, blocks.{i}.*, norm.* (loaded, never applied).
/// </summary>
internal sealed class VisionTransformer : nn.Module
{
    private readonly VitConfig config;
#pragma warning disable IDE1006 // field names are the state-dict keys
    private readonly Parameter? cls_token;
    private readonly Parameter? reg_token;
    private readonly Parameter pos_embed;
    private readonly PatchEmbed patch_embed;
    private readonly ModuleList<VitBlock> blocks;
    private readonly LayerNorm? norm;
#pragma warning restore IDE1006

    /// <summary>
    /// Allocates the tower for a run grid of <paramref name="gridSize"/>² patches; pos_embed is held at the
    /// run grid (the loader resamples the checkpoint's grid into it). Without <paramref name="withUnusedTail"/>
    /// the blocks after Cobra's feature block and the final norm are left out (a converted bundle drops them).
    /// </summary>
    public VisionTransformer(VitConfig config, int gridSize, ScalarType dtype, Device device, bool withUnusedTail = true)
        : base(nameof(VisionTransformer))
    {
        this.config = config;
        GridSize = gridSize;
        int d = config.EmbedDim;
        cls_token = config.ClassToken ? Empty([1, 1, d], dtype, device) : null;
        reg_token = config.RegTokens > 0 ? Empty([1, config.RegTokens, d], dtype, device) : null;
        pos_embed = Empty([1, PosEmbedPrefix + (gridSize * gridSize), d], dtype, device);
        patch_embed = new PatchEmbed(config.PatchSize, d, dtype, device);
        int blockCount = withUnusedTail ? config.Depth : config.FeatureBlock + 1;
        blocks = new ModuleList<VitBlock>(Enumerable.Range(0, blockCount).Select(_ => new VitBlock(config, dtype, device)).ToArray());
        norm = withUnusedTail ? new LayerNorm(d, 1e-6, dtype, device) : null;
        RegisterComponents();
    }

    /// <summary>Sizes.</summary>
    public VitConfig Config => config;

    /// <summary>Patches per side at the run image size.</summary>
    public int GridSize { get; }

    /// <summary>The blocks (through the feature block, or all of them with the unused tail).</summary>
    public IReadOnlyList<VitBlock> Blocks => [.. blocks];

    /// <summary>Prefix positions stored in pos_embed (none with <c>no_embed_class</c>).</summary>
    public int PosEmbedPrefix => config.NoEmbedClass ? 0 : config.PrefixTokens;

    /// <summary>
    /// Cobra's features: the output of block <see cref="VitConfig.FeatureBlock"/> without the final norm and
    /// without prefix tokens, [B, grid², D]. <paramref name="pixels"/> is [B, 3, S, S] (pixels past the last
    /// whole patch are ignored, as timm's stride-patch conv does). With a <paramref name="trace"/>, every block
    /// runs (the last one only for the trace, as timm 0.9.10 does) and each output is reported as
    /// <c>{name}.block{i}.out</c> plus <c>{name}.patch_features</c>.
    /// </summary>
    public Tensor Forward(Tensor pixels, string name, Action<string, Tensor>? trace)
    {
        var x = BeginFeatures(pixels);                                           // [B,prefix+P,D]
        Tensor? features = null;
        int lastBlock = trace is null ? config.FeatureBlock : blocks.Count - 1;
        for (int i = 0; i <= lastBlock; i++)
        {
            // One scope per block: the image holds one block's temporaries at a time, not all of them
            // (~30 MB a block at 384 px, which the allocator kept as resident memory after the image).
            // A trace (golden checks) keeps every temporary alive: what it clones stays valid after the call.
            using var scope = trace is null ? torch.NewDisposeScope() : null;
            var next = RunBlock(i, x);                                           // [B,prefix+P,D]
            trace?.Invoke($"{name}.block{i}.out", next);
            if (i == config.FeatureBlock)
            {
                features = TakeFeatures(next);                                   // [B,P,D]
                features = scope is null ? features : features.MoveToOuterDisposeScope();
            }

            x = scope is null ? next : next.MoveToOuterDisposeScope();
        }

        trace?.Invoke($"{name}.patch_features", features!);
        return features!;
    }

    /// <summary>Blocks that Cobra's features need (0..<see cref="VitConfig.FeatureBlock"/>); the engine runs each as two units (its residual branches).</summary>
    public int FeatureBlockCount => config.FeatureBlock + 1;

    /// <summary>Patch embedding plus position embeddings and prefix tokens: the input of block 0, [B, prefix+P, D].</summary>
    public Tensor BeginFeatures(Tensor pixels) => Embed(patch_embed.forward(pixels.to(pos_embed.dtype)));

    /// <summary>Block <paramref name="index"/> on [B, prefix+P, D].</summary>
    public Tensor RunBlock(int index, Tensor x) => blocks[index].forward(x);

    /// <summary>One residual branch of block <paramref name="index"/> (0: attention, 1: MLP) on [B, prefix+P, D]: the engine's tower unit.</summary>
    public Tensor RunBlockHalf(int index, int half, Tensor x) => half == 0 ? blocks[index].AttentionHalf(x) : blocks[index].MlpHalf(x);

    /// <summary>The patch tokens of a block output (prefix tokens dropped): [B, P, D].</summary>
    public Tensor TakeFeatures(Tensor x) => x.narrow(1, config.PrefixTokens, x.shape[1] - config.PrefixTokens);

    /// <summary>timm <c>_pos_embed</c>: position embeddings added to the patches (and the prefix, unless no_embed_class).</summary>
    private Tensor Embed(Tensor patches)
    {
        long batch = patches.shape[0];
        var prefix = new List<Tensor>();
        if (cls_token is not null)
        {
            prefix.Add(cls_token.expand(batch, -1, -1));
        }

        if (reg_token is not null)
        {
            prefix.Add(reg_token.expand(batch, -1, -1));
        }

        if (config.NoEmbedClass)
        {
            return torch.cat([.. prefix, patches + pos_embed], 1);
        }

        return torch.cat([.. prefix, patches], 1) + pos_embed;
    }

    private static Parameter Empty(long[] shape, ScalarType dtype, Device device) =>
        new(torch.empty(shape, dtype, device), requires_grad: false);
}

/// <summary>Conv2d(3, D, kernel = stride = patch) then flatten to tokens (key <c>proj</c>).</summary>
internal sealed class PatchEmbed : nn.Module<Tensor, Tensor>
{
    private readonly int patchSize;
#pragma warning disable IDE1006 // state-dict key name
    private readonly Conv2dWeights proj;
#pragma warning restore IDE1006

    /// <summary>Allocates the patch conv.</summary>
    public PatchEmbed(int patchSize, int embedDim, ScalarType dtype, Device device)
        : base(nameof(PatchEmbed))
    {
        this.patchSize = patchSize;
        proj = new Conv2dWeights(embedDim, 3, patchSize, dtype, device);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor pixels) =>
        F.conv2d(pixels, proj.Weight, proj.Bias, strides: [patchSize, patchSize]) // [B,D,g,g]
         .flatten(2).transpose(1, 2);                                            // [B,g²,D]
}

/// <summary>Weights of a Conv2d with bias (keys <c>weight</c> [out, in, k, k], <c>bias</c> [out]).</summary>
internal sealed class Conv2dWeights : nn.Module
{
#pragma warning disable IDE1006 // state-dict key names
    private readonly Parameter weight;
    private readonly Parameter bias;
#pragma warning restore IDE1006

    /// <summary>Allocates uninitialised weights.</summary>
    public Conv2dWeights(int outChannels, int inChannels, int kernel, ScalarType dtype, Device device)
        : base("Conv2d")
    {
        weight = new Parameter(torch.empty([outChannels, inChannels, kernel, kernel], dtype, device), requires_grad: false);
        bias = new Parameter(torch.empty([outChannels], dtype, device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>[out, in, k, k].</summary>
    public Parameter Weight => weight;

    /// <summary>[out].</summary>
    public Parameter Bias => bias;
}

/// <summary>x = x + ls1(attn(norm1(x))); x = x + ls2(mlp(norm2(x))) (timm <c>Block</c>).</summary>
internal sealed class VitBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are the state-dict keys
    private readonly LayerNorm norm1;
    private readonly Attention attn;
    private readonly LayerScale? ls1;
    private readonly LayerNorm norm2;
    private readonly Mlp mlp;
    private readonly LayerScale? ls2;
#pragma warning restore IDE1006

    /// <summary>Allocates one block.</summary>
    public VitBlock(VitConfig config, ScalarType dtype, Device device)
        : base(nameof(VitBlock))
    {
        norm1 = new LayerNorm(config.EmbedDim, 1e-6, dtype, device);
        attn = new Attention(config.EmbedDim, config.NumHeads, dtype, device);
        norm2 = new LayerNorm(config.EmbedDim, 1e-6, dtype, device);
        mlp = new Mlp(config.EmbedDim, config.MlpHidden, dtype, device);
        if (config.InitValues is not null)
        {
            ls1 = new LayerScale(config.EmbedDim, dtype, device);
            ls2 = new LayerScale(config.EmbedDim, dtype, device);
        }

        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => MlpHalf(AttentionHalf(x));

    /// <summary>The block's first residual branch: x + LayerScale(Attention(norm1(x))), [B, N, D] (the scale and the add in proj's epilogue).</summary>
    public Tensor AttentionHalf(Tensor x) =>
        attn.Forward(norm1.forward(x), new LinearEpilogue(Gamma: ls1?.Gamma, Residual: x)); // [B,N,D]

    /// <summary>The block's second residual branch: x + LayerScale(Mlp(norm2(x))), [B, N, D] (the scale and the add in fc2's epilogue).</summary>
    public Tensor MlpHalf(Tensor x) =>
        mlp.Forward(norm2.forward(x), new LinearEpilogue(Gamma: ls2?.Gamma, Residual: x)); // [B,N,D]
}

/// <summary>
/// Multi-head self-attention: qkv rows [q; k; v], heads contiguous within each; SDPA, scale 1/√head_dim. In bf16 on
/// a CPU with AVX512-BF16 the native kernel runs it (same cast points as the flash kernels; ~2.3x libtorch's CPU SDPA
/// at the towers' shapes); libtorch's SDPA otherwise and with the managed kernels off (the device-generic path).
/// </summary>
internal sealed class Attention : nn.Module<Tensor, Tensor>, IManagedKernelSwitch
{
    private readonly int heads;
#pragma warning disable IDE1006 // field names are the state-dict keys
    private readonly Linear qkv;
    private readonly Linear proj;
#pragma warning restore IDE1006

    /// <summary>Allocates qkv and proj (both with bias).</summary>
    public Attention(int dim, int heads, ScalarType dtype, Device device)
        : base(nameof(Attention))
    {
        this.heads = heads;
        qkv = new Linear(dim, 3L * dim, hasBias: true, dtype, device);
        proj = new Linear(dim, dim, hasBias: true, dtype, device);
        RegisterComponents();
    }

    /// <inheritdoc />
    public bool UseManagedKernels { get; set; } = true;

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => Forward(x, default);

    /// <summary>Attention of x [B, N, D], then <paramref name="epilogue"/> after the output projection (the block's LayerScale and residual).</summary>
    public Tensor Forward(Tensor x, in LinearEpilogue epilogue)
    {
        long b = x.shape[0], n = x.shape[1], d = x.shape[2];
        var projected = qkv.forward(x);                                          // [B,N,3D]
        if (UseManagedKernels && NativeBf16Kernels.SupportsAttention(projected, heads))
        {
            return proj.Forward(NativeBf16Kernels.Attention(projected, heads), epilogue); // [B,N,D]
        }

        var parts = projected
            .reshape(b, n, 3, heads, d / heads)                                  // [B,N,3,H,hd]
            .permute(2, 0, 3, 1, 4);                                             // [3,B,H,N,hd]
        var attended = F.scaled_dot_product_attention(parts[0], parts[1], parts[2]); // [B,H,N,hd]
        return proj.Forward(attended.transpose(1, 2).reshape(b, n, d), epilogue); // [B,N,D]
    }
}

/// <summary>fc1 → exact (erf) GELU → fc2.</summary>
internal sealed class Mlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are the state-dict keys
    private readonly Linear fc1;
    private readonly Linear fc2;
#pragma warning restore IDE1006

    /// <summary>Allocates fc1 and fc2 (both with bias).</summary>
    public Mlp(int dim, int hidden, ScalarType dtype, Device device)
        : base(nameof(Mlp))
    {
        fc1 = new Linear(dim, hidden, hasBias: true, dtype, device);
        fc2 = new Linear(hidden, dim, hasBias: true, dtype, device);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => Forward(x, default);

    /// <summary>fc2(GELU(fc1(x))), then <paramref name="epilogue"/> after fc2 (the block's LayerScale and residual).</summary>
    public Tensor Forward(Tensor x, in LinearEpilogue epilogue) =>
        fc2.Forward(F.gelu(fc1.forward(x)), epilogue);                          // [B,N,D]
}

/// <summary>Per-channel scale (key <c>gamma</c>), DINOv2's LayerScale.</summary>
internal sealed class LayerScale : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // state-dict key name
    private readonly Parameter gamma;
#pragma warning restore IDE1006

    /// <summary>Allocates an uninitialised [dim] gamma.</summary>
    public LayerScale(int dim, ScalarType dtype, Device device)
        : base(nameof(LayerScale))
    {
        gamma = new Parameter(torch.empty([dim], dtype, device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>[dim].</summary>
    public Parameter Gamma => gamma;

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => x * gamma;
}
