using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>A decode step and a prefill chunk run together (shared projections) against each run on its own.</summary>
public sealed class StepWithChunkTests
{
    public StepWithChunkTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(ScalarType.Float32, true, 1, 1, 5, 1e-5)]
    [InlineData(ScalarType.Float32, true, 3, 2, 7, 1e-5)]
    [InlineData(ScalarType.Float32, false, 2, 2, 4, 1e-5)]                     // the device-generic path
    [InlineData(ScalarType.BFloat16, true, 2, 1, 9, 3e-2)]
    public void Step_with_chunk_equals_the_step_and_the_chunk_apart(ScalarType dtype, bool managed, int decodeRows, int chunkRows, int chunkLength, double tolerance)
    {
        using var scope = torch.NewDisposeScope();
        using var model = new MambaForCausalLM(new MambaConfig { DModel = 40, NLayer = 2, VocabSize = 50 }, dtype, torch.CPU);
        MambaRandomInit.Fill(model, 6);
        ManagedKernels.Configure(model, managed);
        using var generator = new Generator(3);

        // Decoding rows after a short prompt each; chunk rows part-way through their prompts.
        using var stepTogether = model.NewState(decodeRows);
        using var chunkTogether = model.NewState(chunkRows);
        model.Forward(model.Embed(torch.randint(0, 50, [decodeRows, 3], generator: generator)), stepTogether);
        model.Forward(model.Embed(torch.randint(0, 50, [chunkRows, 2], generator: generator)), chunkTogether);
        using var stepApart = stepTogether.Clone();
        using var chunkApart = chunkTogether.Clone();
        var tokens = torch.randint(0, 50, [decodeRows], generator: generator);                  // [B]
        var chunk = model.Embed(torch.randint(0, 50, [chunkRows, chunkLength], generator: generator)); // [R,L,D]

        var (stepLogits, chunkLogits) = model.StepWithChunk(tokens, stepTogether, chunk, chunkTogether, chunkLogits: true);
        var expectedStep = model.Step(tokens, stepApart);                                        // [B,V]
        var expectedChunk = model.Forward(chunk, chunkApart);                                    // [R,V]

        Golden.AssertClose(expectedStep, stepLogits, "step logits", tolerance);
        Golden.AssertClose(expectedChunk, chunkLogits!, "chunk logits", tolerance);
        for (int layer = 0; layer < 2; layer++)
        {
            Golden.AssertClose(stepApart.Layers[layer].Ssm, stepTogether.Layers[layer].Ssm, $"layer {layer} step SSM state", tolerance);
            Golden.AssertClose(chunkApart.Layers[layer].Ssm, chunkTogether.Layers[layer].Ssm, $"layer {layer} chunk SSM state", tolerance);
            Golden.AssertClose(chunkApart.Layers[layer].Conv, chunkTogether.Layers[layer].Conv, $"layer {layer} chunk conv state", tolerance);
        }

        Assert.Equal(stepApart.TokenCount, stepTogether.TokenCount);
        Assert.Equal(chunkApart.TokenCount, chunkTogether.TokenCount);
        Assert.Null(model.StepWithChunk(tokens, stepTogether, chunk, chunkTogether, chunkLogits: false).ChunkLogits);
    }
}
