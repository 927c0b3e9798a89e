using System.Text.Json.Nodes;
using Cobra.AI.Loading;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Modeling.Projection;
using Cobra.AI.Modeling.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Tests;

/// <summary>
/// A hub-mirror folder like the golden kit's, but with a random-weight LLM of other sizes (d_state, d_conv,
/// layers, vocabulary), for checks that must hold on kits we have never seen.
/// </summary>
internal sealed class SyntheticKit : IDisposable
{
    private SyntheticKit(string root, MambaConfig config)
    {
        Root = root;
        Config = config;
    }

    public string Root { get; }

    public MambaConfig Config { get; }

    /// <summary>
    /// Writes the kit; the checkpoint holds <paramref name="config"/>-sized random weights, and with
    /// <paramref name="vision"/> also random towers (in the timm / open_clip file layouts) and a projector.
    /// </summary>
    public static SyntheticKit Create(MambaConfig config, long seed, bool ssmCfgAsAuto = false, SyntheticVision? vision = null)
    {
        string root = Directory.CreateTempSubdirectory("cobra-kit-").FullName;
        string tiny = Golden.TinyAHub;
        CopyFile(tiny, root, "han1997/cobra/cobra+3b/config.json");
        foreach (var file in new[] { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
        {
            CopyFile(tiny, root, $"xiuyul/mamba-2.8b-zephyr/{file}");
        }

        var ssm = new JsonObject { ["d_state"] = config.DState, ["d_conv"] = config.DConv, ["expand"] = config.Expand };
        ssm["dt_rank"] = ssmCfgAsAuto || config.DtRankOverride is null ? "auto" : config.DtRankOverride;
        var llmConfig = new JsonObject
        {
            ["d_model"] = config.DModel, ["n_layer"] = config.NLayer, ["vocab_size"] = config.VocabSize, ["ssm_cfg"] = ssm,
            ["rms_norm"] = true, ["residual_in_fp32"] = true, ["fused_add_norm"] = true, ["pad_vocab_size_multiple"] = config.PadVocabSizeMultiple,
        };
        File.WriteAllText(Path.Combine(root, "xiuyul/mamba-2.8b-zephyr/config.json"), llmConfig.ToJsonString());

        using var scope = torch.NewDisposeScope();
        using var model = new MambaForCausalLM(config, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, seed);
        var tensors = model.state_dict().Select(kv => ("llm_backbone.llm." + kv.Key, kv.Value)).ToList();
        tensors.Add(("llm_backbone.llm.lm_head.weight", model.Backbone.Embedding));
        if (vision is not null)
        {
            tensors.AddRange(vision.Write(root, config.DModel, seed));
        }

        string checkpoints = Path.Combine(root, "han1997/cobra/cobra+3b/checkpoints");
        Directory.CreateDirectory(checkpoints);
        SafetensorsWriter.Write(Path.Combine(checkpoints, "latest-checkpoint.safetensors"), tensors);
        return new SyntheticKit(root, config);
    }

    /// <summary>Loads the kit's LLM in <paramref name="dtype"/>.</summary>
    public MambaForCausalLM LoadModel(ScalarType dtype = ScalarType.Float32)
    {
        var files = CobraModelFiles.FromHubMirror(Root);
        using var checkpoint = LanguageModelLoader.OpenCheckpoint(files.CheckpointPath);
        return LanguageModelLoader.Load(LanguageModelLoader.ReadConfig(files.LlmConfigPath), checkpoint, dtype, torch.CPU);
    }

    private static void CopyFile(string from, string to, string relative)
    {
        string target = Path.Combine(to, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        File.Copy(Path.Combine(from, relative), target);
    }

    public void Dispose() => Directory.Delete(Root, recursive: true);
}

/// <summary>Sizes of synthetic vision towers; DINO's pos_embed is stored at its pretraining grid.</summary>
internal sealed record SyntheticVision(VitConfig Dino, int DinoPretrainGrid, VitConfig SigLip, int ImageSize)
{
    /// <summary>Writes both towers' files and returns the projector's checkpoint tensors.</summary>
    public IEnumerable<(string, Tensor)> Write(string root, int llmWidth, long seed)
    {
        var dino = new VisionTransformer(Dino, DinoPretrainGrid, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(dino, seed + 1);
        string dinoDir = Directory.CreateDirectory(Path.Combine(root, "timm/vit_large_patch14_reg4_dinov2.lvd142m")).FullName;
        SafetensorsWriter.Write(Path.Combine(dinoDir, "model.safetensors"), dino.state_dict().Select(kv => (kv.Key, kv.Value)).ToList());
        File.WriteAllText(Path.Combine(dinoDir, "config.json"), new JsonObject
        {
            ["architecture"] = "vit_large_patch14_reg4_dinov2",
            ["model_args"] = new JsonObject
            {
                ["patch_size"] = Dino.PatchSize, ["embed_dim"] = Dino.EmbedDim, ["depth"] = Dino.Depth, ["num_heads"] = Dino.NumHeads,
                ["init_values"] = 1e-5, ["reg_tokens"] = Dino.RegTokens, ["no_embed_class"] = true, ["img_size"] = DinoPretrainGrid * Dino.PatchSize,
            },
            ["pretrained_cfg"] = new JsonObject { ["mean"] = new JsonArray(0.485, 0.456, 0.406), ["std"] = new JsonArray(0.229, 0.224, 0.225) },
        }.ToJsonString());

        var siglip = new VisionTransformer(SigLip, ImageSize / SigLip.PatchSize, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(siglip, seed + 2);
        string siglipDir = Directory.CreateDirectory(Path.Combine(root, "timm/ViT-SO400M-14-SigLIP-384")).FullName;
        var siglipTensors = siglip.state_dict().Select(kv => ("visual.trunk." + kv.Key, kv.Value)).ToList();
        siglipTensors.Add(("visual.trunk.attn_pool.latent", torch.randn(1, 1, SigLip.EmbedDim)));   // unused MAP head
        siglipTensors.Add(("text.token_embedding.weight", torch.randn(7, 5)));                    // text tower: ignored
        SafetensorsWriter.Write(Path.Combine(siglipDir, "open_clip_model.safetensors"), siglipTensors);
        File.WriteAllText(Path.Combine(siglipDir, "open_clip_config.json"), new JsonObject
        {
            ["model_cfg"] = new JsonObject
            {
                ["vision_cfg"] = new JsonObject
                {
                    ["timm_model_name"] = "vit_so400m_patch14_siglip_384",
                    ["image_size"] = ImageSize,
                    ["timm_model_args"] = new JsonObject
                    {
                        ["patch_size"] = SigLip.PatchSize, ["embed_dim"] = SigLip.EmbedDim, ["depth"] = SigLip.Depth,
                        ["num_heads"] = SigLip.NumHeads, ["mlp_ratio"] = SigLip.MlpRatio, ["class_token"] = false,
                    },
                },
            },
        }.ToJsonString());

        var projector = Projector.Create("no-align+fused-gelu-mlp", Dino.EmbedDim + SigLip.EmbedDim, llmWidth, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(projector, seed + 3);
        return projector.state_dict().Select(kv => ("projector." + kv.Key, kv.Value)).ToList();
    }
}
