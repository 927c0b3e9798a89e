using Cobra.AI.Generation;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>The sampler's fused per-row argmax and log Σ exp against torch's argmax and logsumexp.</summary>
public sealed class LogitRowsCpuTests
{
    public LogitRowsCpuTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]                                                            // shorter than one register: the scalar tail alone
    [InlineData(5, 50280)]                                                        // the real vocabulary (a tail of 8 past 16 lanes)
    [InlineData(64, 1003)]
    public void Equals_torch_argmax_and_logsumexp(int rows, int vocab)
    {
        using var scope = torch.NewDisposeScope();
        var logits = (torch.randn(rows, vocab, generator: new Generator((ulong)((rows * 31) + vocab))) * 4).to(ScalarType.Float32);
        var (argmax, logSumExp) = LogitRowsCpu.TryRun(logits)!.Value;
        Assert.Equal(logits.argmax(-1).data<long>().ToArray(), argmax);
        var expected = logits.logsumexp(-1).data<float>().ToArray();
        for (int r = 0; r < rows; r++)
        {
            Assert.True(Math.Abs(expected[r] - logSumExp[r]) <= 2e-6 * Math.Max(1, Math.Abs(expected[r])), $"row {r}: {logSumExp[r]} vs {expected[r]}");
        }
    }

    [Fact]
    public void Ties_go_to_the_first_index_and_masked_logits_count_as_zero()
    {
        using var scope = torch.NewDisposeScope();
        var row = torch.full(100, float.NegativeInfinity);                        // a constraint's mask: all but three allowed ids are −inf
        row[17] = torch.tensor(2f);
        row[40] = torch.tensor(2f);
        row[99] = torch.tensor(1f);
        var (argmax, logSumExp) = LogitRowsCpu.TryRun(row.unsqueeze(0))!.Value;
        Assert.Equal(17, argmax[0]);
        Assert.Equal(MathF.Log((2 * MathF.Exp(2)) + MathF.Exp(1)), logSumExp[0], 5);
    }

    [Fact]
    public void Leaves_rows_with_a_nan_or_no_finite_maximum_to_torch()
    {
        using var scope = torch.NewDisposeScope();
        var logits = torch.randn(3, 40);
        Assert.NotNull(LogitRowsCpu.TryRun(logits));
        var nan = logits.clone();
        nan[1, 33] = torch.tensor(float.NaN);
        Assert.Null(LogitRowsCpu.TryRun(nan));
        var masked = logits.clone();
        masked[2] = torch.full(40, float.NegativeInfinity);
        Assert.Null(LogitRowsCpu.TryRun(masked));
        Assert.Throws<ArgumentException>(() => LogitRowsCpu.TryRun(logits.to(ScalarType.Float64)));
        Assert.Throws<ArgumentException>(() => LogitRowsCpu.TryRun(logits.t()));
    }

    [Fact]
    public void The_sampler_gives_the_same_tokens_and_logprobs_with_and_without_it()
    {
        using var scope = torch.NewDisposeScope();
        var logits = torch.randn(6, 3000, generator: new Generator(5)) * 3;
        logits[4] = torch.full(3000, float.NaN);                                  // a broken row: torch's conventions for the whole call
        SamplingRow[] Rows(long count, int top) => [.. Enumerable.Range(0, (int)count).Select(i => new SamplingRow(new SamplingOptions { Temperature = i == 3 ? 0.8 : 0, Seed = 9 }, [], 0, null, logprobs: true, topLogprobs: top))];
        foreach (var input in new[] { logits.narrow(0, 0, 4), logits })
        {
            var fused = BatchSampler.Sample(input, Rows(input.shape[0], 2), null, cpuKernels: true);
            var plain = BatchSampler.Sample(input, Rows(input.shape[0], 2), null, cpuKernels: false);
            Assert.Equal(plain.Select(t => t.Token), fused.Select(t => t.Token));
            for (int i = 0; i < plain.Length; i++)
            {
                double expected = plain[i].Logprob!.Logprob, actual = fused[i].Logprob!.Logprob;
                Assert.True(double.IsNaN(expected) ? double.IsNaN(actual) : Math.Abs(expected - actual) <= 1e-5, $"row {i}: {actual} vs {expected}");
                Assert.Equal(plain[i].Logprob!.TopLogprobs.Count, fused[i].Logprob!.TopLogprobs.Count);
            }
        }

        Assert.Throws<ArgumentException>(() => BatchSampler.Sample(logits, Rows(5, 0), null)); // one settings row per logits row
    }
}
