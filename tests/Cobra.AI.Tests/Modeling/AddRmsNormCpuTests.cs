using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>The fused add + RMSNorm (decode rows and prefill sequences) against its torch-op path.</summary>
public sealed class AddRmsNormCpuTests
{
    public AddRmsNormCpuTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(ScalarType.Float32, true, 1e-6, new long[] { 3, 80 })]
    [InlineData(ScalarType.Float32, false, 1e-6, new long[] { 3, 80 })]
    [InlineData(ScalarType.BFloat16, true, 8e-3, new long[] { 3, 80 })]
    [InlineData(ScalarType.BFloat16, false, 8e-3, new long[] { 3, 80 })]
    [InlineData(ScalarType.Float32, true, 1e-6, new long[] { 2, 37, 83 })]          // a prefill's [B, L, D], a width with a tail
    [InlineData(ScalarType.BFloat16, true, 8e-3, new long[] { 1, 300, 2560 })]     // prompt-sized: rows split over the workers
    [InlineData(ScalarType.BFloat16, false, 8e-3, new long[] { 1, 300, 2560 })]
    public void Equals_the_torch_op_path(ScalarType dtype, bool withResidual, double tolerance, long[] shape)
    {
        using var scope = torch.NewDisposeScope();
        using var generator = new torch.Generator(3);
        long width = shape[^1];
        var norm = new RmsNorm(width, 1e-5, dtype, torch.CPU);
        norm.Weight.detach().copy_(torch.rand([width], generator: generator).add_(0.5));
        var hidden = torch.randn(shape, generator: generator).to(dtype);
        var residual = withResidual ? torch.randn(shape, generator: generator) : null;
        var hiddenBefore = hidden.clone();

        norm.UseManagedKernels = false;
        var (expected, expectedResidual) = norm.AddAndNormalize(hidden, residual);
        norm.UseManagedKernels = true;
        Assert.True(AddRmsNormCpu.Supports(hidden, residual));
        var (actual, actualResidual) = norm.AddAndNormalize(hidden, residual);

        Assert.Equal(dtype, actual.dtype);
        Golden.AssertClose(expectedResidual, actualResidual, "residual", 0);
        Golden.AssertClose(expected.to(ScalarType.Float32), actual.to(ScalarType.Float32), "normalized", tolerance);
        Assert.True(hidden.equal(hiddenBefore).all().item<bool>(), "the input was modified");
        Assert.False(ReferenceEquals(actualResidual, residual));
    }
}
