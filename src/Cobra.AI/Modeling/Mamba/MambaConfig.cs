using System.Text.Json;

namespace Cobra.AI.Modeling.Mamba;

/// <summary>
/// Sizes of a Mamba language model, as mamba_ssm 1.2.x derives them from an LLM <c>config.json</c>
/// (<c>d_model</c>, <c>n_layer</c>, <c>vocab_size</c>, <c>pad_vocab_size_multiple</c>, <c>ssm_cfg</c>).
/// </summary>
internal sealed record MambaConfig
{
    /// <summary>Residual stream width (2560 for Mamba-2.8B).</summary>
    public required int DModel { get; init; }

    /// <summary>Number of Mamba blocks (64 for Mamba-2.8B).</summary>
    public required int NLayer { get; init; }

    /// <summary>Vocabulary size from the config, before padding (50277 for GPT-NeoX-20B).</summary>
    public required int VocabSize { get; init; }

    /// <summary>The embedding and logits are padded up to a multiple of this (8).</summary>
    public int PadVocabSizeMultiple { get; init; } = 8;

    /// <summary>SSM state size per channel (16).</summary>
    public int DState { get; init; } = 16;

    /// <summary>Causal convolution width (4).</summary>
    public int DConv { get; init; } = 4;

    /// <summary>Inner width factor: d_inner = expand * d_model (2).</summary>
    public int Expand { get; init; } = 2;

    /// <summary>Rank of the Δ projection; null means "auto" = ceil(d_model / 16).</summary>
    public int? DtRankOverride { get; init; }

    /// <summary>RMSNorm epsilon (mamba_ssm's default 1e-5).</summary>
    public double NormEpsilon { get; init; } = 1e-5;

    /// <summary>Inner (mixer) width.</summary>
    public int DInner => Expand * DModel;

    /// <summary>Rank of the Δ projection.</summary>
    public int DtRank => DtRankOverride ?? (DModel + 15) / 16;

    /// <summary>Vocabulary size after padding: the embedding rows and the logits width.</summary>
    public int PaddedVocabSize =>
        VocabSize % PadVocabSizeMultiple == 0 ? VocabSize : VocabSize + PadVocabSizeMultiple - (VocabSize % PadVocabSizeMultiple);

    /// <summary>
    /// Reads the LLM <c>config.json</c> layout. <c>ssm_cfg</c> may override d_state, d_conv, expand and
    /// dt_rank ("auto" or an integer), exactly as <c>Mamba(**ssm_cfg)</c> does upstream.
    /// </summary>
    /// <exception cref="InvalidDataException">A required field is missing or a value is out of range.</exception>
    public static MambaConfig FromJson(JsonElement root, string sourceName)
    {
        int Required(string name) =>
            root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) && i > 0
                ? i
                : throw new InvalidDataException($"{sourceName}: '{name}' must be a positive integer.");

        var config = new MambaConfig
        {
            DModel = Required("d_model"),
            NLayer = Required("n_layer"),
            VocabSize = Required("vocab_size"),
            PadVocabSizeMultiple = root.TryGetProperty("pad_vocab_size_multiple", out _) ? Required("pad_vocab_size_multiple") : 8,
            NormEpsilon = root.TryGetProperty("norm_epsilon", out var eps) && eps.ValueKind == JsonValueKind.Number ? eps.GetDouble() : 1e-5,
        };

        if (root.TryGetProperty("rms_norm", out var rms) && rms.ValueKind == JsonValueKind.False)
        {
            throw new InvalidDataException($"{sourceName}: rms_norm=false (LayerNorm Mamba) is not supported; Cobra's LLM uses RMSNorm.");
        }

        if (!root.TryGetProperty("ssm_cfg", out var ssm) || ssm.ValueKind == JsonValueKind.Null)
        {
            return config;
        }

        if (ssm.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"{sourceName}: 'ssm_cfg' must be an object.");
        }

        int SsmInt(string name, int fallback) =>
            !ssm.TryGetProperty(name, out var v) ? fallback
            : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) && i > 0 ? i
            : throw new InvalidDataException($"{sourceName}: 'ssm_cfg.{name}' must be a positive integer.");

        int? dtRank = null;
        if (ssm.TryGetProperty("dt_rank", out var rank) && !(rank.ValueKind == JsonValueKind.String && rank.GetString() == "auto"))
        {
            dtRank = SsmInt("dt_rank", 0);
        }

        return config with
        {
            DState = SsmInt("d_state", config.DState),
            DConv = SsmInt("d_conv", config.DConv),
            Expand = SsmInt("expand", config.Expand),
            DtRankOverride = dtRank,
        };
    }
}
