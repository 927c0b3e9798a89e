using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

public sealed class CpuGemvTests
{
    public CpuGemvTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(1, 37, 61, false)]
    [InlineData(1, 2560, 10240, false)]
    [InlineData(2, 160, 5120, true)]
    [InlineData(3, 5120, 2563, true)]
    [InlineData(4, 9, 4, false)]
    public void Equals_libtorch_linear(int rows, int inFeatures, int outFeatures, bool withBias)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(rows, 1, inFeatures);
        var w = torch.randn(outFeatures, inFeatures);
        var b = withBias ? torch.randn(outFeatures) : null;
        Assert.True(CpuGemv.Supports(x, w));
        var expected = torch.nn.functional.linear(x, w, b);
        var actual = CpuGemv.Linear(x, w, b);
        Assert.Equal(expected.shape, actual.shape);
        Golden.AssertClose(expected, actual, "gemv", tolerance: 1e-5);
    }

    [Theory]
    [InlineData(1, 2560, 10240)]
    [InlineData(3, 160, 5121)]
    [InlineData(2, 18, 7)]
    public void Bf16_equals_libtorch_within_bf16_rounding(int rows, int inFeatures, int outFeatures)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(rows, inFeatures).to(ScalarType.BFloat16);
        var w = torch.randn(outFeatures, inFeatures).to(ScalarType.BFloat16);
        Assert.True(CpuGemv.Supports(x, w));
        var expected = torch.nn.functional.linear(x.to(ScalarType.Float32), w.to(ScalarType.Float32));
        var actual = CpuGemv.Linear(x, w, null);
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        Golden.AssertClose(expected, actual.to(ScalarType.Float32), "bf16 gemv", tolerance: 1e-2);
    }

    [Fact]
    public void Leaves_what_it_does_not_handle_to_libtorch()
    {
        using var scope = torch.NewDisposeScope();
        var w = torch.randn(8, 16);
        Assert.False(CpuGemv.Supports(torch.randn(5, 16), w));                   // more rows than a decode step
        Assert.False(CpuGemv.Supports(torch.randn(1, 15).to(ScalarType.BFloat16), torch.randn(8, 15).to(ScalarType.BFloat16))); // odd K in bf16
        Assert.False(CpuGemv.Supports(torch.randn(1, 8), torch.randn(16, 8).t())); // non-contiguous weight
    }
}
