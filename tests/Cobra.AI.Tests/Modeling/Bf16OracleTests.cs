using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>
/// Issue 11 item 5: the bf16 model against an executable oracle of the reference's cast points
/// (<see cref="Bf16Oracle"/>) and against upstream's own bf16 prefill logits (kit <c>expected_bf16</c>).
/// Distances are rel-L2 of the last-position prefill logits. Measured on the CI CPU (Xeon, libtorch 2.10):
/// text_only: model 0, oracle 0 (bf16 residual stream 4.7e-3, fp32 8.1e-3); img_scene / img_rgba: model
/// 5.5e-3 / 5.3e-3, oracle 5.3e-3 / 4.6e-3, fp32 1.0e-2 / 1.1e-2. Stage by stage the model's towers and
/// projector equal the oracle exactly once attention runs through the same kernel; libtorch's SDPA itself
/// rounds ~3% of its bf16 outputs a ulp away from the flash emulation. The image cases sit at this tiny
/// random model's bf16 noise floor: that one difference moves the logits 5e-3, as does every other
/// cast-point choice tried, so only the closeness ratio is meaningful there.
/// </summary>
public sealed class Bf16OracleTests : IDisposable
{
    private readonly ITestOutputHelper output;
    private readonly CobraModel model;
    private readonly SafetensorsFile upstream;

    public Bf16OracleTests(ITestOutputHelper output)
    {
        this.output = output;
        TorchRuntime.EnsureInitialized();
        model = CobraModelLoader.Load(CobraModelFiles.FromHubMirror(Golden.TinyAHub), ScalarType.BFloat16, torch.CPU).Model;
        upstream = SafetensorsFile.Open(Golden.Fixtures("tiny-a", "expected_bf16", "prefill_logits.safetensors"));
    }

    public static TheoryData<string> ImageCases() => ["img_scene", "img_rgba"];

    [Fact]
    public void Text_prompt_equals_upstreams_bf16_logits_and_a_bf16_residual_stream_does_not()
    {
        using var scope = torch.NewDisposeScope();
        using var expected = SafetensorsFile.Open(Golden.Expected("text_only"));
        long[] ids = Golden.Ids(expected, "input_ids");
        var reference = upstream.Read("text_only");                              // [V]

        var modelTaps = new Dictionary<string, Tensor>();
        var oracleTaps = new Dictionary<string, Tensor>();
        var modelLogits = ModelLogits(expected, ids, image: false, modelTaps);
        var oracle = new Bf16Oracle(model).PrefillLogits(null, ids, (n, t) => oracleTaps[n] = t.clone());
        var wrong = new Bf16Oracle(model, OracleVariant.Bf16ResidualStream).PrefillLogits(null, ids);
        double fp32 = RelL2(expected.Read("logits.prefill")[0, -1], reference);
        output.WriteLine($"text_only rel-L2 to upstream bf16: model {RelL2(modelLogits, reference):E3}, oracle {RelL2(oracle, reference):E3}, bf16 residual stream {RelL2(wrong, reference):E3}, fp32 {fp32:E3}");

        // Another CPU's GEMM may round a few bf16 outputs differently; the wrong cast point is 4.7e-3 away.
        const double bound = 1.5e-3;
        Assert.InRange(RelL2(oracle, reference), 0, bound);
        Assert.InRange(RelL2(modelLogits, reference), 0, bound);
        Assert.True(RelL2(wrong, reference) > 2 * bound, $"bf16 residual stream: {RelL2(wrong, reference):E3}");
        Assert.Equal(oracleTaps.Keys.Order(), modelTaps.Keys.Where(oracleTaps.ContainsKey).Order());
        foreach (var (name, tap) in oracleTaps)
        {
            Assert.InRange(RelL2(modelTaps[name], tap), 0, bound);
        }
    }

    [Theory]
    [MemberData(nameof(ImageCases))]
    public void Image_prompts_are_closer_to_upstreams_bf16_logits_than_fp32_is(string kitCase)
    {
        using var scope = torch.NewDisposeScope();
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        long[] ids = Golden.Ids(expected, "input_ids");
        var reference = upstream.Read(kitCase);
        var modelLogits = ModelLogits(expected, ids, image: true);
        var oracle = new Bf16Oracle(model);
        var oracleLogits = oracle.PrefillLogits(oracle.EncodeImage(expected.Read("pixel_values.dino"), expected.Read("pixel_values.siglip")), ids);
        double fp32 = RelL2(expected.Read("logits.prefill")[0, -1], reference);
        output.WriteLine($"{kitCase} rel-L2 to upstream bf16: model {RelL2(modelLogits, reference):E3}, oracle {RelL2(oracleLogits, reference):E3}, fp32 {fp32:E3}; model vs oracle {RelL2(modelLogits, oracleLogits):E3}");

        Assert.InRange(RelL2(modelLogits, reference), 0, 0.7 * fp32);
        Assert.InRange(RelL2(oracleLogits, reference), 0, 0.7 * fp32);
        // img_scene's top two upstream logits are one bf16 ulp apart, so the top token may swap within them.
        long top = modelLogits.argmax().item<long>();
        Assert.Contains(top, reference.topk(2).indexes.data<long>().ToArray());
    }

    [Theory]
    [MemberData(nameof(ImageCases))]
    public void Every_tower_block_and_the_projector_follow_the_oracles_cast_points(string kitCase)
    {
        // Stage by stage from the oracle's own inputs (one GEMM-order flip upstream would otherwise spread
        // through attention): with attention through the kernel the model uses, a block's outputs agree but
        // for rare one-ulp flips; a wrong cast point changes a large share of them.
        using var scope = torch.NewDisposeScope();
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        var inputs = new Dictionary<string, Tensor>();

        // The attention the model runs: the native kernel (the flash kernels' cast points, which the Reference
        // variant emulates) where the CPU has AVX512-BF16, else libtorch's SDPA.
        var matching = NativeBf16Kernels.IsAvailable ? OracleVariant.Reference : OracleVariant.LibtorchAttention;
        var reference = new Bf16Oracle(model, matching);
        var fused = (Tensor?)null;
        reference.EncodeImage(expected.Read("pixel_values.dino"), expected.Read("pixel_values.siglip"), (n, t) =>
        {
            inputs[n] = t.clone();
            if (n == "vision.fused_patch_features")
            {
                fused = t.clone();
            }
        });

        var worst = new Dictionary<OracleVariant, double>();
        foreach (var variant in new[] { OracleVariant.LibtorchAttention, OracleVariant.Reference, OracleVariant.BiasAfterRounding, OracleVariant.NormalisedBf16Probabilities })
        {
            var oracle = new Bf16Oracle(model, variant);
            var shares = new List<string>();
            double max = 0;
            foreach (var (tower, name) in new[] { (model.Vision!.Dino, "vision.dino"), (model.Vision.SigLip, "vision.siglip") })
            {
                for (int i = 0; i <= tower.Config.FeatureBlock; i++)
                {
                    var x = inputs[i == 0 ? $"{name}.embedded" : $"{name}.block{i - 1}.out"];
                    double share = DifferingShare(tower.Blocks[i].forward(x.to(ScalarType.BFloat16)).to(ScalarType.Float32), oracle.Block(x, $"{name}.blocks.{i}", tower));
                    shares.Add($"{name} block {i} {share:P2}");
                    max = Math.Max(max, share);
                }
            }

            var projected = model.Projector!.forward(fused!.to(ScalarType.BFloat16)).to(ScalarType.Float32);
            double projector = DifferingShare(projected, oracle.Project(fused!));
            max = Math.Max(max, projector);
            worst[variant] = max;
            output.WriteLine($"{kitCase} {variant}: share of outputs differing from the model: {string.Join(", ", shares)}, projector {projector:P2}");
        }

        // The language model from the oracle's image tokens.
        long[] ids = Golden.Ids(expected, "input_ids");
        var tokens = reference.Project(fused!);
        using var state = model.LanguageModel.NewState();
        var llm = model.LanguageModel.Forward(model.InputEmbeddings(tokens.to(ScalarType.BFloat16), torch.tensor(ids).unsqueeze(0)), state)[0];
        double llmDistance = RelL2(llm, reference.PrefillLogits(tokens, ids));
        output.WriteLine($"{kitCase}: prefill logits from the same image tokens, model vs oracle rel-L2 {llmDistance:E3}");

        // Measured 3.4e-3 (img_rgba) and 2.4e-3 (img_scene): one-ulp flips in the first layers, from the scan
        // kernel's polynomial exp, amplified by this tiny random model (with SDPA's image tokens img_rgba measured 0);
        // the text test pins the LLM's cast points.
        Assert.InRange(llmDistance, 0, 5e-3);
        Assert.InRange(worst[matching], 0, 0.02);
        Assert.True(worst[OracleVariant.BiasAfterRounding] > 0.05, $"rounding before the bias: {worst[OracleVariant.BiasAfterRounding]:P2}");
        Assert.True(worst[OracleVariant.NormalisedBf16Probabilities] > 0.05, $"normalised bf16 probabilities: {worst[OracleVariant.NormalisedBf16Probabilities]:P2}");
    }

    private static double DifferingShare(Tensor a, Tensor b) => (a != b).to(ScalarType.Float64).mean().item<double>();

    private Tensor ModelLogits(SafetensorsFile expected, long[] ids, bool image, Dictionary<string, Tensor>? taps = null)
    {
        Action<string, Tensor>? trace = taps is null ? null : (n, t) => taps[n] = t.to(ScalarType.Float32).clone().DetachFromDisposeScope();
        var tokens = image ? model.EncodeImage(expected.Read("pixel_values.dino"), expected.Read("pixel_values.siglip"), trace) : null;
        using var state = model.LanguageModel.NewState();
        return model.LanguageModel.Forward(model.InputEmbeddings(tokens, torch.tensor(ids).unsqueeze(0)), state, trace: trace)[0];
    }

    private static double RelL2(Tensor actual, Tensor reference)
    {
        using var scope = torch.NewDisposeScope();
        var r = reference.to(ScalarType.Float64).reshape(-1);
        var a = actual.to(ScalarType.Float64).reshape(-1);
        return ((a - r).norm() / r.norm()).item<double>();
    }

    public void Dispose()
    {
        upstream.Dispose();
        model.Dispose();
    }
}
