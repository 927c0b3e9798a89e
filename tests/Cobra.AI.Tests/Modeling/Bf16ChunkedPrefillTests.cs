using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>
/// Issue 10 item 4: a bf16 prefill cut into chunks equals the one-shot prefill. The state is carried in float32
/// between chunks (the reference's scan keeps it in float32 for the whole prompt and rounds once, when decoding
/// reads it), so the only differences left are those of the matmul kernels at other row counts.
/// </summary>
public sealed class Bf16ChunkedPrefillTests : IDisposable
{
    private readonly ITestOutputHelper output;
    private readonly CobraModel model;

    public Bf16ChunkedPrefillTests(ITestOutputHelper output)
    {
        this.output = output;
        TorchRuntime.EnsureInitialized();
        model = CobraModelLoader.Load(CobraModelFiles.FromHubMirror(Golden.TinyAHub), ScalarType.BFloat16, torch.CPU).Model;
    }

    public static TheoryData<string, int, bool> Cases()
    {
        var data = new TheoryData<string, int, bool>();
        foreach (string kitCase in new[] { "text_only", "img_scene" })
        {
            foreach (int chunk in new[] { 1, 7, 256 })
            {
                data.Add(kitCase, chunk, true);
                data.Add(kitCase, chunk, false);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Chunked_prefill_equals_one_shot_and_so_does_the_next_step(string kitCase, int chunk, bool managedKernels)
    {
        using var scope = torch.NewDisposeScope();
        ManagedKernels.Configure(model, managedKernels);
        var llm = model.LanguageModel;
        var embeds = Embeddings(kitCase);                                        // [1,L,D] bf16

        using var once = llm.NewState();
        var expected = llm.Forward(embeds, once);                                // [1,V]
        using var pieces = llm.NewState();
        var actual = Prefill(embeds, pieces, chunk, roundStateBetweenChunks: false);

        // A snapshot taken after the prefill resumes exactly like the state it was taken from.
        using var snapshot = pieces.Clone();
        var next = torch.tensor(new long[] { 298 });
        var stepOnce = llm.Step(next, once);
        var stepPieces = llm.Step(next, pieces);
        var stepSnapshot = llm.Step(next, snapshot);

        double prefillDiff = (actual - expected).abs().max().item<float>();
        double stepDiff = (stepPieces - stepOnce).abs().max().item<float>();
        double stateDistance = StateDistance(once, pieces);
        output.WriteLine($"{kitCase} L={embeds.shape[1]} chunk={chunk} managed kernels {managedKernels}: prefill logits max |diff| {prefillDiff:E3}, next step {stepDiff:E3}, state rel-L2 {stateDistance:E3}");

        Assert.Equal(ScalarType.Float32, pieces.Layers[0].Ssm.dtype);
        Assert.True(stepSnapshot.equal(stepPieces).all().item<bool>(), "a cloned state resumes exactly");
        if (chunk >= embeds.shape[1])
        {
            Assert.True(actual.equal(expected).all().item<bool>(), "one chunk is the one-shot prefill");
        }

        // Measured on the CI CPU with the managed kernels: 0 for every chunk size. The device-generic chunked
        // scan sums its chunks in another order at another length, and another CPU's GEMM may sum a row in
        // another order at another row count and round a bf16 output a ulp apart; rounding the state to bf16
        // between chunks (the old behaviour, checked below) is ~3e-3 away.
        Assert.True(stateDistance <= 1e-4, $"state after prefill: rel-L2 {stateDistance:E3}");
        Assert.True(prefillDiff <= 1e-2 * expected.abs().max().item<float>(), $"prefill: max |diff| {prefillDiff:E3}");
        Assert.True(stepDiff <= 1e-2 * stepOnce.abs().max().item<float>(), $"step: max |diff| {stepDiff:E3}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    public void Rounding_the_state_to_bf16_between_chunks_is_measurably_different(int chunk)
    {
        // The check above must be able to fail: the bf16 state the reference keeps only between decode steps,
        // applied between prefill chunks, moves the state far past its bound.
        using var scope = torch.NewDisposeScope();
        var llm = model.LanguageModel;
        var embeds = Embeddings("img_scene");
        using var once = llm.NewState();
        llm.Forward(embeds, once);
        using var rounded = llm.NewState();
        Prefill(embeds, rounded, chunk, roundStateBetweenChunks: true);
        double distance = StateDistance(once, rounded);
        output.WriteLine($"chunk={chunk} with bf16 state between chunks: state rel-L2 {distance:E3}");
        Assert.True(distance > 1e-4, $"rel-L2 {distance:E3}");
    }

    private Tensor Prefill(Tensor embeds, MambaState state, int chunk, bool roundStateBetweenChunks)
    {
        long length = embeds.shape[1];
        Tensor? logits = null;
        for (long start = 0; start < length; start += chunk)
        {
            logits = model.LanguageModel.Forward(embeds.narrow(1, start, Math.Min(chunk, length - start)), state);
            if (roundStateBetweenChunks)
            {
                foreach (var layer in state.Layers)
                {
                    layer.Ssm.copy_(layer.Ssm.to(ScalarType.BFloat16));
                }
            }
        }

        return logits!;
    }

    /// <summary>rel-L2 of the concatenated SSM states.</summary>
    private static double StateDistance(MambaState expected, MambaState actual)
    {
        var a = torch.cat(expected.Layers.Select(l => l.Ssm.flatten()).ToArray());
        var b = torch.cat(actual.Layers.Select(l => l.Ssm.flatten()).ToArray());
        return ((b - a).norm() / a.norm()).item<float>();
    }

    private Tensor Embeddings(string kitCase)
    {
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        long[] ids = Golden.Ids(expected, "input_ids");
        Tensor? image = kitCase == "text_only" ? null : model.EncodeImage(expected.Read("pixel_values.dino"), expected.Read("pixel_values.siglip"));
        return model.InputEmbeddings(image, torch.tensor(ids).unsqueeze(0));
    }

    public void Dispose() => model.Dispose();
}
