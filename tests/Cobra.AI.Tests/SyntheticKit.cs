using System.Text.Json.Nodes;
using Cobra.AI.Loading;
using Cobra.AI.Modeling.Mamba;
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

    /// <summary>Writes the kit; the checkpoint holds <paramref name="config"/>-sized random weights.</summary>
    public static SyntheticKit Create(MambaConfig config, long seed, bool ssmCfgAsAuto = false)
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
