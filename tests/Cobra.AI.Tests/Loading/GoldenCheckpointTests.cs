using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using TorchSharp;
using Xunit;

namespace Cobra.AI.Tests.Loading;

public sealed class GoldenCheckpointTests
{
    private static readonly string Hub = Path.Combine(AppContext.BaseDirectory, "fixtures", "tiny-a", "hub");
    private static readonly string Checkpoints = Path.Combine(Hub, "han1997", "cobra", "cobra+3b", "checkpoints");

    [Fact]
    public void Pt_checkpoint_matches_its_safetensors_copy_tensor_for_tensor()
    {
        TorchRuntime.EnsureInitialized();
        using var pt = PyTorchCheckpoint.Open(Path.Combine(Checkpoints, "latest-checkpoint.pt"));
        using var st = SafetensorsFile.Open(Path.Combine(Checkpoints, "latest-checkpoint.safetensors"));
        var model = pt.WithPrefix("model.");

        Assert.Equal(st.Keys.Order(StringComparer.Ordinal), model.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(pt.Keys.Count, model.Keys.Count);
        foreach (var key in model.Keys)
        {
            using var scope = torch.NewDisposeScope();
            Assert.Equal(st.GetInfo(key).Shape, model.GetInfo(key).Shape);
            Assert.Equal(st.GetInfo(key).DType, model.GetInfo(key).DType);
            Assert.True(model.Read(key).equal(st.Read(key)).all().item<bool>(), key);
        }
    }

    [Fact]
    public void Tied_lm_head_equals_the_embedding()
    {
        TorchRuntime.EnsureInitialized();
        using var pt = PyTorchCheckpoint.Open(Path.Combine(Checkpoints, "latest-checkpoint.pt"));
        var llm = pt.WithPrefix("model.llm_backbone.llm.");
        using var head = llm.Read("lm_head.weight");
        using var embedding = llm.Read("backbone.embedding.weight");

        Assert.Equal(new long[] { 584, 64 }, head.shape);
        Assert.True(head.equal(embedding).all().item<bool>());
    }

    [Fact]
    public void Pt_keys_follow_the_nested_dicts_in_file_order()
    {
        using var pt = PyTorchCheckpoint.Open(Path.Combine(Checkpoints, "latest-checkpoint.pt"));

        Assert.Equal("model.projector.projector.0.weight", pt.Keys[0]);
        Assert.Equal("model.llm_backbone.llm.lm_head.weight", pt.Keys[^1]);
        Assert.Contains("model.llm_backbone.llm.backbone.embedding.weight", pt.Keys);
        Assert.Equal(new long[] { 320, 80 }, pt.GetInfo("model.projector.projector.0.weight").Shape);
    }

    [Theory]
    [InlineData("vit_large_patch14_reg4_dinov2.lvd142m", "model.safetensors", "pos_embed")]
    [InlineData("vit_so400m_patch14_siglip_384.webli", "model.safetensors", "pos_embed")]
    [InlineData("ViT-SO400M-14-SigLIP-384", "open_clip_model.safetensors", "visual.trunk.pos_embed")]
    public void Timm_safetensors_open_and_read(string repo, string file, string key)
    {
        TorchRuntime.EnsureInitialized();
        using var st = SafetensorsFile.Open(Path.Combine(Hub, "timm", repo, file));

        Assert.Contains(key, st.Keys);
        foreach (var name in st.Keys)
        {
            using var tensor = st.Read(name);
            Assert.Equal(st.GetInfo(name).Shape, tensor.shape);
        }
    }

    [Fact]
    public void Prefixed_view_strips_the_prefix_and_names_it()
    {
        TorchRuntime.EnsureInitialized();
        using var st = SafetensorsFile.Open(Path.Combine(Hub, "timm", "ViT-SO400M-14-SigLIP-384", "open_clip_model.safetensors"));
        var trunk = st.WithPrefix("visual.trunk.");

        Assert.EndsWith("open_clip_model.safetensors [visual.trunk.]", trunk.SourceName);
        Assert.All(trunk.Keys, k => Assert.False(k.StartsWith("visual.", StringComparison.Ordinal)));
        Assert.Equal("pos_embed", trunk.GetInfo("pos_embed").Key);
        using var direct = st.Read("visual.trunk.pos_embed");
        using var viaView = trunk.Read("pos_embed");
        Assert.True(direct.equal(viaView).all().item<bool>());
    }
}
