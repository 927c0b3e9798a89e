using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>The fused add + RMSNorm of the decode step against its torch-op path.</summary>
public sealed class AddRmsNormCpuTests
{
    public AddRmsNormCpuTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(ScalarType.Float32, true, 1e-6)]
    [InlineData(ScalarType.Float32, false, 1e-6)]
    [InlineData(ScalarType.BFloat16, true, 8e-3)]
    [InlineData(ScalarType.BFloat16, false, 8e-3)]
    public void Equals_the_torch_op_path(ScalarType dtype, bool withResidual, double tolerance)
    {
        using var scope = torch.NewDisposeScope();
        using var generator = new torch.Generator(3);
        var norm = new RmsNorm(80, 1e-5, dtype, torch.CPU);
        norm.Weight.detach().copy_(torch.rand([80], generator: generator).add_(0.5));
        var hidden = torch.randn([3, 80], generator: generator).to(dtype);
        var residual = withResidual ? torch.randn([3, 80], generator: generator) : null;
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
