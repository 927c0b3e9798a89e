using Cobra.AI.Generation;
using Cobra.AI.Modeling;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Generation;

public sealed class SamplerTests
{
    public SamplerTests() => TorchRuntime.EnsureInitialized();

    private static Tensor Logits(params float[] values) => torch.tensor(values).unsqueeze(0);

    private static long[] Draw(SamplingOptions options, Tensor logits, int count)
    {
        using var sampler = new Sampler(options, torch.CPU);
        return Enumerable.Range(0, count).Select(_ => sampler.Next(logits).item<long>()).ToArray();
    }

    [Fact]
    public void Greedy_is_argmax_over_every_logit_including_padding_rows()
    {
        using var scope = torch.NewDisposeScope();
        var logits = Logits(0.1f, 2f, -1f, 3f);
        Assert.All(Draw(SamplingOptions.Greedy, logits, 3), id => Assert.Equal(3, id));
        Assert.All(Draw(new SamplingOptions { Temperature = 1.0, TopK = 1 }, logits, 3), id => Assert.Equal(3, id));
    }

    [Fact]
    public void Top_k_samples_only_among_the_k_best()
    {
        using var scope = torch.NewDisposeScope();
        var draws = Draw(new SamplingOptions { Temperature = 5, TopK = 2, Seed = 1 }, Logits(1f, 1.2f, 0.9f, 1.1f), 400);
        Assert.All(draws, id => Assert.Contains(id, new long[] { 1, 3 }));
        Assert.Contains(1L, draws);
        Assert.Contains(3L, draws);
    }

    [Fact]
    public void Top_p_keeps_only_the_nucleus()
    {
        using var scope = torch.NewDisposeScope();
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps ids 0 and 1 only.
        var logits = Logits(3f, 2f, 1f, 0f);
        var draws = Draw(new SamplingOptions { Temperature = 1, TopP = 0.8, Seed = 3 }, logits, 500);
        Assert.All(draws, id => Assert.InRange(id, 0, 1));
        Assert.Contains(1L, draws);
    }

    [Fact]
    public void Same_seed_same_draws_and_frequencies_follow_the_softmax()
    {
        using var scope = torch.NewDisposeScope();
        var logits = Logits(0f, MathF.Log(3f));                                  // p = [0.25, 0.75]
        var options = new SamplingOptions { Temperature = 1, Seed = 42 };
        var a = Draw(options, logits, 2000);
        Assert.Equal(a, Draw(options, logits, 2000));
        Assert.InRange(a.Count(id => id == 1) / 2000.0, 0.70, 0.80);
    }

    [Theory]
    [InlineData(0, 1.0, 0, 0.0)]
    [InlineData(5, -0.5, 0, 0.0)]
    [InlineData(5, double.NaN, 0, 0.0)]
    [InlineData(5, 1.0, -1, 0.0)]
    [InlineData(5, 1.0, 0, 1.5)]
    public void Invalid_settings_are_rejected_by_name(int maxNewTokens, double temperature, int topK, double topP)
    {
        var options = new SamplingOptions { MaxNewTokens = maxNewTokens, Temperature = temperature, TopK = topK, TopP = topP };
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(options, torch.CPU));
        Assert.False(string.IsNullOrEmpty(e.ParamName));
    }
}
