using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Vision;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Cobra.AI.Tests.Modeling;

/// <summary>Deliberate departures from the reference's cast points, to prove a comparison can tell them apart.</summary>
internal enum OracleVariant
{
    /// <summary>The cast points of spec §6.6 and of timm's modules in bf16.</summary>
    Reference,

    /// <summary>Mamba's residual stream rounded to bf16 after every add (the reference keeps it in float32).</summary>
    Bf16ResidualStream,

    /// <summary>Attention probabilities normalised before the value product and rounded there (the eager softmax route).</summary>
    NormalisedBf16Probabilities,

    /// <summary>Linear outputs rounded before the bias is added, and rounded again (libtorch's N-D bf16 linear).</summary>
    BiasAfterRounding,

    /// <summary>
    /// The reference, but attention through libtorch's CPU SDPA kernel, as the model runs it: isolates every
    /// other cast point (the kernel rounds a few outputs a ulp away from the flash emulation).
    /// </summary>
    LibtorchAttention,
}

/// <summary>
/// An executable statement of the reference's bf16 numerics (spec §6.6, §3.5 and the kit's expected_bf16
/// README), independent of the model's code: plain float32 tensor ops over bf16-valued weights, with an
/// explicit rounding to bf16 (<see cref="R"/>) at every point where the reference stores a bf16 tensor, and
/// mamba_ssm's sequential <c>selective_scan_ref</c>. Cast points:
/// <list type="bullet">
/// <item>Linear / conv: float32 accumulation (bias included), one rounding of the output.</item>
/// <item>timm LayerNorm: float32 statistics and affine, rounded once; GELU, LayerScale, residual adds: on bf16
/// tensors, each result rounded.</item>
/// <item>Attention as the flash kernels run it: float32 scores times the scale, float32 row max, unnormalised
/// exponentials rounded to bf16 for the value product, float32 row sums and accumulation, float32
/// normalisation, bf16 output.</item>
/// <item>Mamba: float32 residual stream; RMSNorm in float32, rounded; conv + SiLU in float32, rounded; Δ bias
/// and softplus, the scan, the D skip and the gate in float32, the gated output rounded once; logits bf16.</item>
/// </list>
/// </summary>
internal sealed class Bf16Oracle
{
    private readonly Dictionary<string, Tensor> w;
    private readonly CobraModel model;
    private readonly OracleVariant variant;

    /// <summary>Takes the bf16 model's weights (as float32 copies of the bf16 values); the model's code is not used.</summary>
    public Bf16Oracle(CobraModel bf16Model, OracleVariant variant = OracleVariant.Reference)
    {
        model = bf16Model;
        this.variant = variant;
        w = [];
        foreach (var (key, value) in bf16Model.Vision!.state_dict())
        {
            w["vision." + key] = value.to(ScalarType.Float32);
        }

        foreach (var (key, value) in bf16Model.Projector!.state_dict())
        {
            w["projector." + key] = value.to(ScalarType.Float32);
        }

        foreach (var (key, value) in bf16Model.LanguageModel.state_dict())
        {
            w["llm." + key] = value.to(ScalarType.Float32);
        }
    }

    /// <summary>Rounds float32 values to the nearest bf16 (ties to even), kept in a float32 tensor.</summary>
    public static Tensor R(Tensor t) => t.to(ScalarType.BFloat16).to(ScalarType.Float32);

    /// <summary>Image tokens [1, P, d_model] (bf16 values) from the two pixel tensors (float32).</summary>
    public Tensor EncodeImage(Tensor dinoPixels, Tensor siglipPixels, Action<string, Tensor>? trace = null)
    {
        var dino = Tower(dinoPixels, "vision.dino", model.Vision!.Dino, trace);
        var siglip = Tower(siglipPixels, "vision.siglip", model.Vision.SigLip, trace);
        var x = torch.cat([dino, siglip], 2);                                    // [1,P,Dd+Ds]
        trace?.Invoke("vision.fused_patch_features", x);
        x = Project(x);                                                          // [1,P,D]
        trace?.Invoke("projector.output", x);
        return x;
    }

    /// <summary>The fused-gelu-mlp projector over fused features [1, P, Dv] (bf16 values).</summary>
    public Tensor Project(Tensor fused)
    {
        var p = "projector.projector.";
        var x = R(F.gelu(Linear(fused, p + "0")));
        x = R(F.gelu(Linear(x, p + "2")));
        return Linear(x, p + "4");
    }

    /// <summary>Last-position prefill logits [V] (bf16 values) of [image tokens | text ids].</summary>
    public Tensor PrefillLogits(Tensor? imageTokens, long[] ids, Action<string, Tensor>? trace = null)
    {
        var embedding = w["llm.backbone.embedding.weight"];                      // [V,D]
        var text = embedding.index_select(0, torch.tensor(ids)).unsqueeze(0);   // [1,T,D]
        var h = imageTokens is null ? text : torch.cat([imageTokens, text], 1);  // [1,L,D]
        int layers = model.LanguageModel.Config.NLayer;
        Tensor? residual = null;
        for (int i = 0; i < layers; i++)
        {
            residual = residual is null ? h : residual + h;                      // float32 stream
            if (variant == OracleVariant.Bf16ResidualStream)
            {
                residual = R(residual);
            }

            string p = $"llm.backbone.layers.{i}.";
            h = Mixer(R(RmsNorm(residual, p + "norm.weight")), p + "mixer.");
            trace?.Invoke($"llm.layer{i}.mixer_out", h);
        }

        residual = residual! + h;
        if (variant == OracleVariant.Bf16ResidualStream)
        {
            residual = R(residual);
        }

        var final = R(RmsNorm(residual, "llm.backbone.norm_f.weight"));          // [1,L,D]
        return R(torch.matmul(final[0, -1], embedding.t()));                     // [V]
    }

    private Tensor Tower(Tensor pixels, string name, VisionTransformer tower, Action<string, Tensor>? trace)
    {
        var c = tower.Config;
        string p = name + ".";
        int patch = c.PatchSize;
        var x = R(F.conv2d(R(pixels), w[p + "patch_embed.proj.weight"], w[p + "patch_embed.proj.bias"], strides: [patch, patch])) // [1,D,g,g]
            .flatten(2).transpose(1, 2);                                         // [1,P,D]
        var prefix = new List<Tensor>();
        if (c.ClassToken)
        {
            prefix.Add(w[p + "cls_token"]);
        }

        if (c.RegTokens > 0)
        {
            prefix.Add(w[p + "reg_token"]);
        }

        x = c.NoEmbedClass
            ? torch.cat([.. prefix, R(x + w[p + "pos_embed"])], 1)
            : R(torch.cat([.. prefix, x], 1) + w[p + "pos_embed"]);
        trace?.Invoke($"{name}.embedded", x);
        for (int i = 0; i <= c.FeatureBlock; i++)
        {
            x = Block(x, $"{name}.blocks.{i}", tower);
            trace?.Invoke($"{name}.block{i}.out", x);
        }

        return x.narrow(1, c.PrefixTokens, x.shape[1] - c.PrefixTokens);         // [1,P,D]
    }

    /// <summary>timm's pre-norm block <paramref name="prefix"/> (e.g. <c>vision.dino.blocks.0</c>) over x [1, N, D] (bf16 values).</summary>
    public Tensor Block(Tensor x, string prefix, VisionTransformer tower)
    {
        var c = tower.Config;
        string b = prefix + ".";
        var attended = Linear(Attention(Linear(LayerNorm(x, b + "norm1"), b + "attn.qkv"), c.NumHeads), b + "attn.proj");
        x = R(x + (c.InitValues is null ? attended : R(attended * w[b + "ls1.gamma"])));
        var mixed = Linear(R(F.gelu(Linear(LayerNorm(x, b + "norm2"), b + "mlp.fc1"))), b + "mlp.fc2");
        return R(x + (c.InitValues is null ? mixed : R(mixed * w[b + "ls2.gamma"])));
    }

    /// <summary>qkv [1, N, 3D] (bf16 values) → [1, N, D] (bf16 values).</summary>
    private Tensor Attention(Tensor qkv, int heads)
    {
        long n = qkv.shape[1], d = qkv.shape[2] / 3, hd = d / heads;
        var parts = qkv.reshape(1, n, 3, heads, hd).permute(2, 0, 3, 1, 4);     // [3,1,H,N,hd]
        var scores = torch.matmul(parts[0], parts[1].transpose(-2, -1)) * (1.0 / Math.Sqrt(hd)); // [1,H,N,N] float32
        Tensor result;
        if (variant == OracleVariant.LibtorchAttention)
        {
            var bf16 = parts.to(ScalarType.BFloat16);
            result = F.scaled_dot_product_attention(bf16[0], bf16[1], bf16[2]).to(ScalarType.Float32);
        }
        else if (variant == OracleVariant.NormalisedBf16Probabilities)
        {
            result = torch.matmul(R(scores.softmax(-1)), parts[2]);
        }
        else
        {
            var e = (scores - scores.amax([-1], keepdim: true)).exp();           // unnormalised, float32
            result = torch.matmul(R(e), parts[2]) / e.sum(-1, keepdim: true);   // float32 accumulation, then normalise
        }

        return R(result).transpose(1, 2).reshape(1, n, d);
    }

    private Tensor Linear(Tensor x, string prefix) =>
        variant == OracleVariant.BiasAfterRounding && w.ContainsKey(prefix + ".bias")
            ? R(R(F.linear(x, w[prefix + ".weight"])) + w[prefix + ".bias"])
            : R(F.linear(x, w[prefix + ".weight"], w.GetValueOrDefault(prefix + ".bias")));

    private Tensor LayerNorm(Tensor x, string prefix) =>
        R(F.layer_norm(x, [x.shape[^1]], w[prefix + ".weight"], w[prefix + ".bias"], 1e-6));

    private static Tensor Rms(Tensor r) => (r.square().mean([-1], keepdim: true) + 1e-5).rsqrt();

    private Tensor RmsNorm(Tensor r, string key) => r * Rms(r) * w[key];

    /// <summary>mamba_ssm's slow path with the CUDA kernels' cast points; u [1, L, D] bf16 values.</summary>
    private Tensor Mixer(Tensor u, string p)
    {
        var config = model.LanguageModel.Config;
        int di = config.DInner, k = config.DConv;
        var xz = R(torch.matmul(u, w[p + "in_proj.weight"].t()));               // [1,L,2Di]
        var x = xz.narrow(-1, 0, di).transpose(1, 2);                            // [1,Di,L]
        var z = xz.narrow(-1, di, di);                                           // [1,L,Di]
        long length = u.shape[1];
        var conv = F.conv1d(F.pad(x, [k - 1, 0]), w[p + "conv1d.weight"], w[p + "conv1d.bias"], groups: di); // [1,Di,L] float32
        var xc = R(F.silu(conv)).transpose(1, 2);                                // [1,L,Di]
        var xdbl = R(torch.matmul(xc, w[p + "x_proj.weight"].t()));             // [1,L,R+2N]
        var parts = xdbl.split([config.DtRank, config.DState, config.DState], -1);
        var dt = R(torch.matmul(parts[0], w[p + "dt_proj.weight"].t()));        // [1,L,Di], no bias
        var delta = F.softplus(dt + w[p + "dt_proj.bias"], beta: 1, threshold: 20);
        var a = w[p + "A_log"].exp().neg();                                      // [Di,N]
        var h = torch.zeros(di, config.DState);
        var ys = new Tensor[length];
        for (long t = 0; t < length; t++)
        {
            var dtT = delta[0, t].unsqueeze(-1);                                 // [Di,1]
            h = ((dtT * a).exp() * h) + (dtT * xc[0, t].unsqueeze(-1) * parts[1][0, t]); // [Di,N]
            ys[t] = torch.matmul(h, parts[2][0, t]);                            // [Di]
        }

        var y = torch.stack(ys, 0).unsqueeze(0) + (xc * w[p + "D"]);              // [1,L,Di]
        var gated = R(y * F.silu(z));
        return R(torch.matmul(gated, w[p + "out_proj.weight"].t()));            // [1,L,D]
    }
}
