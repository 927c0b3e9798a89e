using System.Text.Json;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Loading;

/// <summary>Builds Cobra's Mamba LLM from its <c>config.json</c> and the Cobra checkpoint.</summary>
internal static class LanguageModelLoader
{
    /// <summary>Reads and validates an LLM <c>config.json</c>.</summary>
    public static MambaConfig ReadConfig(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.Exists(path) ? File.ReadAllBytes(path) : throw CheckpointErrors.Missing(path));
            return MambaConfig.FromJson(doc.RootElement, path);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e);
        }
    }

    /// <summary>Opens a checkpoint by extension: <c>.safetensors</c> or a torch.save zip (<c>.pt</c>, <c>.bin</c>).</summary>
    public static ITensorSource OpenCheckpoint(string path) =>
        path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? SafetensorsFile.Open(path) : PyTorchCheckpoint.Open(path);

    /// <summary>
    /// The part of a Cobra checkpoint that holds one trainable module (<c>projector</c> or <c>llm_backbone</c>):
    /// <c>model.&lt;module&gt;.</c> in the released nested <c>.pt</c>, <c>&lt;module&gt;.</c> in a flat safetensors.
    /// </summary>
    public static ITensorSource ModulePart(ITensorSource checkpoint, string module)
    {
        string nested = $"model.{module}.";
        return checkpoint.Keys.Any(k => k.StartsWith(nested, StringComparison.Ordinal))
            ? checkpoint.WithPrefix(nested)
            : checkpoint.WithPrefix($"{module}.");
    }

    /// <summary>
    /// Allocates the LLM in <paramref name="dtype"/> on <paramref name="device"/> and loads it strictly from
    /// the checkpoint's <c>llm_backbone</c> part (keys <c>llm.backbone.*</c>, <c>llm.lm_head.weight</c>).
    /// </summary>
    public static MambaForCausalLM Load(MambaConfig config, ITensorSource checkpoint, ScalarType dtype, Device device)
    {
        var model = new MambaForCausalLM(config, dtype, device);
        try
        {
            using var llm = ModulePart(checkpoint, "llm_backbone").WithPrefix("llm.");
            StateDictLoader.Load(model, llm, MambaForCausalLM.TiedKeys);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
