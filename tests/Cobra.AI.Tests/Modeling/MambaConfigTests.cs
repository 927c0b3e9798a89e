using System.Text.Json;
using Cobra.AI.Loading;
using Cobra.AI.Modeling.Mamba;
using Xunit;

namespace Cobra.AI.Tests.Modeling;

public sealed class MambaConfigTests
{
    private static MambaConfig Parse(string json) => MambaConfig.FromJson(JsonDocument.Parse(json).RootElement, "config.json");

    [Fact]
    public void Real_mamba_2_8b_zephyr_config_gives_upstream_dimensions()
    {
        var c = Parse("""{"d_model": 2560, "n_layer": 64, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8}""");
        Assert.Equal((2560, 64, 5120, 16, 4, 160, 50280), (c.DModel, c.NLayer, c.DInner, c.DState, c.DConv, c.DtRank, c.PaddedVocabSize));
        Assert.Equal(1e-5, c.NormEpsilon);
    }

    [Fact]
    public void Ssm_cfg_overrides_state_conv_expand_and_dt_rank()
    {
        var c = Parse("""{"d_model": 64, "n_layer": 3, "vocab_size": 581, "pad_vocab_size_multiple": 16, "ssm_cfg": {"d_state": 8, "d_conv": 3, "expand": 3, "dt_rank": 7}}""");
        Assert.Equal((8, 3, 192, 7, 592), (c.DState, c.DConv, c.DInner, c.DtRank, c.PaddedVocabSize));
        Assert.Equal(4, Parse("""{"d_model": 64, "n_layer": 1, "vocab_size": 8, "ssm_cfg": {"dt_rank": "auto"}}""").DtRank);
        Assert.Equal(5, Parse("""{"d_model": 65, "n_layer": 1, "vocab_size": 8}""").DtRank);
    }

    [Theory]
    [InlineData("""{"n_layer": 2, "vocab_size": 5}""", "d_model")]
    [InlineData("""{"d_model": 0, "n_layer": 2, "vocab_size": 5}""", "d_model")]
    [InlineData("""{"d_model": 8, "n_layer": 2, "vocab_size": 5, "ssm_cfg": {"d_state": -1}}""", "ssm_cfg.d_state")]
    [InlineData("""{"d_model": 8, "n_layer": 2, "vocab_size": 5, "ssm_cfg": {"dt_rank": "big"}}""", "ssm_cfg.dt_rank")]
    [InlineData("""{"d_model": 8, "n_layer": 2, "vocab_size": 5, "ssm_cfg": 3}""", "ssm_cfg")]
    [InlineData("""{"d_model": 8, "n_layer": 2, "vocab_size": 5, "rms_norm": false}""", "rms_norm")]
    public void Bad_configs_name_the_file_and_field(string json, string field)
    {
        var e = Assert.Throws<InvalidDataException>(() => Parse(json));
        Assert.Contains("config.json", e.Message, StringComparison.Ordinal);
        Assert.Contains(field, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Config_file_that_is_not_json_or_missing_is_reported_by_path()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, "{ not json");
            Assert.Contains(path, Assert.Throws<InvalidDataException>(() => LanguageModelLoader.ReadConfig(path)).Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }

        Assert.Contains(path, Assert.Throws<FileNotFoundException>(() => LanguageModelLoader.ReadConfig(path)).Message, StringComparison.Ordinal);
    }
}
