using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>
/// The kit's image cases at every tap, fp32 on the CPU. Each stage is fed the kit's stored input for that
/// stage, so a failure points at one stage; one test also runs the whole chain from the stored pixels.
/// </summary>
public abstract class CobraVisionParityTests : IDisposable
{
    private readonly CobraModel model;
    private readonly ImageSettings images;

    protected CobraVisionParityTests(bool managedKernels)
    {
        TorchRuntime.EnsureInitialized();
        var files = CobraModelFiles.FromHubMirror(Golden.TinyAHub);
        var (loaded, settings) = CobraModelLoader.Load(files, ScalarType.Float32, torch.CPU);
        model = loaded;
        ManagedKernels.Configure(model, managedKernels);
        images = settings!;
    }

    public static TheoryData<string> Cases() => ["img_scene", "img_rgba"];

    [Fact]
    public void Run_settings_and_resampled_pos_embeds_match_the_kit()
    {
        Assert.Equal(56, images.ImageSize);
        Assert.Equal(Cobra.AI.Imaging.ResizeStrategy.ResizeNaive, images.ResizeStrategy);
        Assert.Equal(0.485f, images.Dino.Mean[0]);
        Assert.Equal(0.5f, images.SigLip.Std[2]);
        using var expected = SafetensorsFile.Open(Golden.Fixtures("tiny-a", "expected", "vision_weights_after_load.safetensors"));
        var dict = model.Vision!.state_dict();
        Golden.AssertClose(expected.Read("dino.pos_embed_after_load"), dict["dino.pos_embed"], "dino.pos_embed_after_load");
        Golden.AssertClose(expected.Read("siglip.pos_embed_after_load"), dict["siglip.pos_embed"], "siglip.pos_embed_after_load");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Unit_by_unit_encoding_equals_the_one_call_encoding(string kitCase)
    {
        using var scope = torch.NewDisposeScope();
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        var dino = expected.Read("pixel_values.dino");
        var siglip = expected.Read("pixel_values.siglip");
        var whole = model.EncodeImage(dino, siglip);                              // [1,P,D]
        using var encoding = new ImageEncoding(model, dino, siglip);
        Assert.Equal((2 * (model.Vision!.Dino.FeatureBlockCount + model.Vision.SigLip.FeatureBlockCount)) + model.Projector!.LayerCount, encoding.UnitCount);
        int units = 0;
        while (!encoding.Advance())
        {
            units++;
            Assert.Null(encoding.Result);
        }

        Assert.Equal(encoding.UnitCount, units + 1);
        Assert.Equal(0, encoding.UnitsLeft);
        Assert.True(whole.equal(encoding.Result!).all().item<bool>(), "the engine's tower units (attention and MLP branches apart) must compute exactly what one EncodeImage call does");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Towers_fusion_and_projector_match_every_tap(string kitCase)
    {
        using var scope = torch.NewDisposeScope();
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        var taps = new Dictionary<string, Tensor>();
        model.EncodeImage(expected.Read("pixel_values.dino"), expected.Read("pixel_values.siglip"), (name, t) => taps[name] = t.clone().DetachFromDisposeScope());

        int blocks = model.Vision!.Dino.Config.Depth + model.Vision.SigLip.Config.Depth;
        Assert.Equal(blocks + 4, taps.Count);
        foreach (var (name, tensor) in taps)
        {
            Golden.AssertClose(expected.Read(name), tensor, name);
        }

        // The projector alone, from the stored fused features.
        Golden.AssertClose(expected.Read("projector.output"), model.Projector!.forward(expected.Read("vision.fused_patch_features")), "projector from stored input");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Language_model_from_the_stored_inputs_matches_logits_states_and_greedy_ids(string kitCase)
    {
        using var scope = torch.NewDisposeScope();
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        var llm = model.LanguageModel;
        long[] greedy = Golden.Ids(expected, "decode.greedy_ids");

        var taps = new Dictionary<string, Tensor>();
        using var state = llm.NewState();
        var logits = llm.Forward(expected.Read("llm.inputs_embeds"), state, allPositions: true, trace: (name, t) => taps[name] = t.clone().DetachFromDisposeScope());
        foreach (var (name, tensor) in taps)
        {
            Golden.AssertClose(expected.Read(name), tensor, name);
            tensor.Dispose();
        }

        Golden.AssertClose(expected.Read("logits.prefill"), logits, "logits.prefill");
        for (int i = 0; i < llm.Config.NLayer; i++)
        {
            Golden.AssertClose(expected.Read($"decode.state_after_prefill.layer{i}.ssm_state"), state.Layers[i].Ssm, $"layer {i} ssm state after prefill");
            Golden.AssertClose(expected.Read($"decode.state_after_prefill.layer{i}.conv_state"), state.Layers[i].Conv, $"layer {i} conv state after prefill");
        }

        var rows = new List<Tensor> { logits[0, -1].unsqueeze(0) };
        foreach (long id in greedy[..^1])
        {
            rows.Add(llm.Step(torch.tensor(new[] { id }), state));
        }

        var decode = torch.cat(rows, 0);
        Golden.AssertClose(expected.Read("decode.logits"), decode, "decode.logits");
        Assert.Equal(greedy, decode.argmax(-1).data<long>().ToArray());
        for (int i = 0; i < llm.Config.NLayer; i++)
        {
            Golden.AssertClose(expected.Read($"decode.state_final.layer{i}.ssm_state"), state.Layers[i].Ssm, $"layer {i} final ssm state");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void End_to_end_from_stored_pixels_reproduces_the_greedy_ids_and_teacher_forced_logits(string kitCase)
    {
        using var scope = torch.NewDisposeScope();
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        long[] prompt = Golden.Ids(expected, "input_ids");
        long[] greedy = Golden.Ids(expected, "decode.greedy_ids");
        var image = model.EncodeImage(expected.Read("pixel_values.dino"), expected.Read("pixel_values.siglip"));
        var embeds = model.InputEmbeddings(image, torch.tensor(prompt).unsqueeze(0));
        Golden.AssertClose(expected.Read("llm.inputs_embeds"), embeds, "llm.inputs_embeds");

        // Free greedy decoding (the engine's path is checked against the same ids in EngineParityTests).
        using (var decodeState = model.LanguageModel.NewState())
        {
            var ids = new List<long> { model.LanguageModel.Forward(embeds, decodeState).argmax(-1).item<long>() };
            while (ids.Count < greedy.Length)
            {
                ids.Add(model.LanguageModel.Step(torch.tensor(new[] { ids[^1] }), decodeState).argmax(-1).item<long>());
            }

            Assert.Equal(greedy, ids);
        }

        var teacher = model.InputEmbeddings(image, torch.tensor([.. prompt, .. greedy[..^1]]).unsqueeze(0));
        using var state = model.LanguageModel.NewState();
        Golden.AssertClose(expected.Read("logits.teacher_forced"), model.LanguageModel.Forward(teacher, state, allPositions: true), "logits.teacher_forced");
    }

    public void Dispose() => model.Dispose();
}

/// <summary>The golden image cases with the managed CPU kernels.</summary>
public sealed class CobraVisionParityManagedKernelTests() : CobraVisionParityTests(managedKernels: true);

/// <summary>The golden image cases on the device-generic path CUDA runs, on the CPU.</summary>
public sealed class CobraVisionParityDeviceGenericTests() : CobraVisionParityTests(managedKernels: false);
