using System.Diagnostics;
using Cobra.AI.Generation;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Generation;

public sealed class TokenGeneratorTests
{
    public TokenGeneratorTests() => TorchRuntime.EnsureInitialized();

    private static MambaForCausalLM Model(long seed)
    {
        var model = new MambaForCausalLM(new MambaConfig { DModel = 32, NLayer = 2, VocabSize = 40 }, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, seed);
        return model;
    }

    [Fact]
    public void Stops_on_the_end_of_text_token_and_returns_it()
    {
        using var model = Model(1);
        using var embeds = model.Embed(torch.tensor(new long[] { 1, 2, 3 }).unsqueeze(0));
        var free = TokenGenerator.Generate(model, embeds, SamplingOptions.Greedy with { MaxNewTokens = 6, EosTokenId = -1 });
        Assert.Equal(FinishReason.Length, free.FinishReason);
        Assert.Equal(6, free.OutputIds.Count);

        // Declare the third greedy token the end-of-text id: generation must stop right after producing it.
        int eos = free.OutputIds[2];
        int firstEos = free.OutputIds.ToList().IndexOf(eos);
        var stopped = TokenGenerator.Generate(model, embeds, SamplingOptions.Greedy with { MaxNewTokens = 6, EosTokenId = eos });
        Assert.Equal(FinishReason.Stop, stopped.FinishReason);
        Assert.Equal(free.OutputIds.Take(firstEos + 1), stopped.OutputIds);
    }

    [Fact]
    public void Cancellation_is_seen_between_steps()
    {
        using var model = Model(2);
        using var embeds = model.Embed(torch.tensor(new long[] { 1, 2, 3 }).unsqueeze(0));
        using var cts = new CancellationTokenSource();
        int produced = 0;
        Assert.Throws<OperationCanceledException>(() => TokenGenerator.Generate(
            model, embeds, SamplingOptions.Greedy with { MaxNewTokens = 50, EosTokenId = -1 },
            onToken: _ => { if (++produced == 3) { cts.Cancel(); } }, cancellationToken: cts.Token));
        Assert.Equal(3, produced);
    }

    [Fact]
    public void No_tensor_or_memory_leaks_over_many_generations()
    {
        using var model = Model(3);
        using var embeds = model.Embed(torch.tensor(new long[] { 5, 6, 7, 8 }).unsqueeze(0));
        var options = SamplingOptions.Greedy with { MaxNewTokens = 40, EosTokenId = -1 };
        void Turn()
        {
            var result = TokenGenerator.Generate(model, embeds, options, keepLogits: true);
            result.StepLogits!.Dispose();
        }

        for (int i = 0; i < 3; i++)
        {
            Turn();                                                              // warm-up: allocator pools, JIT
        }

        long liveBefore = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        long rssBefore = Process.GetCurrentProcess().WorkingSet64;
        for (int i = 0; i < 30; i++)
        {
            Turn();
        }

        Assert.Equal(liveBefore, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        long growth = Process.GetCurrentProcess().WorkingSet64 - rssBefore;
        Assert.True(growth < 64L << 20, $"RSS grew by {growth >> 20} MiB over 1200 decode steps");
    }
}
