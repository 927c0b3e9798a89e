using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>
/// The kit's <c>text_only</c> case end to end at every tap it stores: fp32 on CPU must match upstream's
/// outputs within the kit README §8 tolerances, and the greedy ids exactly.
/// </summary>
public abstract class MambaParityTests : IDisposable
{
    private readonly SafetensorsFile expected;
    private readonly MambaForCausalLM model;
    private readonly long[] promptIds;
    private readonly long[] greedyIds;

    protected MambaParityTests(bool managedKernels)
    {
        TorchRuntime.EnsureInitialized();
        var files = CobraModelFiles.FromHubMirror(Golden.TinyAHub);
        using var checkpoint = PyTorchCheckpoint.Open(Path.ChangeExtension(files.CheckpointPath, ".pt"));
        model = LanguageModelLoader.Load(LanguageModelLoader.ReadConfig(files.LlmConfigPath), checkpoint, ScalarType.Float32, torch.CPU);
        ManagedKernels.Configure(model, managedKernels);
        expected = SafetensorsFile.Open(Golden.Expected("text_only"));
        promptIds = Golden.Ids(expected, "input_ids");
        greedyIds = Golden.Ids(expected, "decode.greedy_ids");
    }

    public static TheoryData<string> Scans() => ["sequential", "chunked", "cpu"];

    private static ScanImplementation ScanByName(string name) => name switch
    {
        "sequential" => SelectiveScan.Sequential,
        "chunked" => (in ScanInputs i, Tensor? s) => SelectiveScan.Chunked(i, s, chunkSize: 8),
        _ => SelectiveScanCpu.Run,
    };

    [Theory]
    [MemberData(nameof(Scans))]
    public void Prefill_matches_every_tap_and_the_state_after_prefill(string scan)
    {
        using var scope = torch.NewDisposeScope();
        var taps = new Dictionary<string, Tensor>();
        using var state = model.NewState();
        var logits = model.Forward(model.Embed(torch.tensor(promptIds).unsqueeze(0)), state, allPositions: true, ScanByName(scan), (name, t) => taps[name] = t.clone().DetachFromDisposeScope());

        Assert.Equal(2 * model.Config.NLayer + 2, taps.Count);
        foreach (var (name, tensor) in taps)
        {
            Golden.AssertClose(expected.Read(name), tensor, name);
            tensor.Dispose();
        }

        Golden.AssertClose(expected.Read("logits.prefill"), logits, "logits.prefill");
        AssertState(state, "decode.state_after_prefill");
    }

    [Fact]
    public void Recurrent_decode_matches_step_logits_final_state_and_greedy_ids()
    {
        using var scope = torch.NewDisposeScope();
        using var state = model.NewState();
        var rows = new List<Tensor> { model.Forward(model.Embed(torch.tensor(promptIds).unsqueeze(0)), state) };
        var greedy = new List<long> { rows[0].argmax(-1).item<long>() };
        for (int k = 0; k < greedyIds.Length - 1; k++)
        {
            var stepLogits = model.Step(torch.tensor(new[] { greedyIds[k] }), state);
            rows.Add(stepLogits);
            greedy.Add(stepLogits.argmax(-1).item<long>());
        }

        Golden.AssertClose(expected.Read("decode.logits"), torch.cat(rows, 0), "decode.logits");
        AssertState(state, "decode.state_final");
        Assert.Equal(greedyIds, greedy);
    }

    [Fact]
    public void Teacher_forced_full_sequence_matches()
    {
        using var scope = torch.NewDisposeScope();
        using var state = model.NewState();
        long[] sequence = [.. promptIds, .. greedyIds[..^1]];
        var logits = model.Forward(model.Embed(torch.tensor(sequence).unsqueeze(0)), state, allPositions: true);
        Golden.AssertClose(expected.Read("logits.teacher_forced"), logits, "logits.teacher_forced");
    }

    [Fact]
    public void Safetensors_and_pt_checkpoints_load_the_same_model()
    {
        using var scope = torch.NewDisposeScope();
        var files = CobraModelFiles.FromHubMirror(Golden.TinyAHub);
        Assert.EndsWith(".safetensors", files.CheckpointPath, StringComparison.Ordinal);
        using var checkpoint = LanguageModelLoader.OpenCheckpoint(files.CheckpointPath);
        using var fromSafetensors = LanguageModelLoader.Load(model.Config, checkpoint, ScalarType.Float32, torch.CPU);
        var a = model.state_dict();
        var b = fromSafetensors.state_dict();
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var key in a.Keys)
        {
            Assert.True(a[key].equal(b[key]).all().item<bool>(), key);
        }
    }

    private void AssertState(MambaState state, string prefix)
    {
        for (int i = 0; i < state.Layers.Count; i++)
        {
            Golden.AssertClose(expected.Read($"{prefix}.layer{i}.conv_state"), state.Layers[i].Conv, $"{prefix}.layer{i}.conv_state");
            Golden.AssertClose(expected.Read($"{prefix}.layer{i}.ssm_state"), state.Layers[i].Ssm, $"{prefix}.layer{i}.ssm_state");
        }
    }

    public void Dispose()
    {
        model.Dispose();
        expected.Dispose();
    }
}

/// <summary>The golden LLM cases with the managed CPU kernels (decode GEMV, fused scan).</summary>
public sealed class MambaParityManagedKernelTests() : MambaParityTests(managedKernels: true);

/// <summary>The golden LLM cases on the device-generic path CUDA runs (libtorch linear, chunked scan), on the CPU.</summary>
public sealed class MambaParityDeviceGenericTests() : MambaParityTests(managedKernels: false);
