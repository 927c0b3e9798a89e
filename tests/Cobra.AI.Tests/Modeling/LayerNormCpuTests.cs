using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>The towers' LayerNorm kernel against its torch-op path (float32 statistics and affine, one rounding).</summary>
public sealed class LayerNormCpuTests
{
    public LayerNormCpuTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]                                                            // shorter than one vector: the scalar tail only
    [InlineData(5, 1153)]                                                         // a vector body and a tail
    [InlineData(729, 1152)]                                                       // SigLIP's rows: split over the workers
    public void Equals_the_torch_op_path(int rows, int width)
    {
        using var scope = torch.NewDisposeScope();
        using var generator = new torch.Generator((ulong)(rows * 31 + width));
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var norm = new Cobra.AI.Modeling.LayerNorm(width, 1e-6, dtype, torch.CPU);
            foreach (var (_, parameter) in norm.named_parameters())
            {
                parameter.copy_(torch.randn([width], generator: generator).mul_(0.5).add_(1));
            }

            var x = torch.randn([1, rows, width], generator: generator).mul_(3).add_(0.5).to(dtype); // [1,N,C]
            Assert.True(LayerNormCpu.Supports(x, norm.get_parameter("weight")!, norm.get_parameter("bias")!));
            var expected = norm.TorchForward(x);
            var actual = norm.forward(x);
            Assert.Equal(dtype, actual.dtype);
            Assert.Equal(x.shape, actual.shape);
            if (dtype == ScalarType.Float32)
            {
                Golden.AssertClose(expected, actual, "float32 LayerNorm", 2e-6);
            }
            else
            {
                // float32 moments summed in another order move an output across a bf16 rounding boundary rarely.
                double share = (expected != actual).to(ScalarType.Float64).mean().item<double>();
                Assert.InRange(share, 0, 0.002);
                Golden.AssertClose(expected.to(ScalarType.Float32), actual.to(ScalarType.Float32), "bf16 LayerNorm", 8e-3);
            }

            norm.UseManagedKernels = false;
            Assert.True(norm.forward(x).equal(expected).all().item<bool>(), "the switch turns the kernel off");
        }
    }

    [Fact]
    public void A_constant_row_normalises_to_the_bias_and_nan_propagates()
    {
        using var scope = torch.NewDisposeScope();
        var norm = new Cobra.AI.Modeling.LayerNorm(40, 1e-6, ScalarType.Float32, torch.CPU);
        norm.get_parameter("weight")!.copy_(torch.full(40, 2f));
        norm.get_parameter("bias")!.copy_(torch.arange(40, dtype: ScalarType.Float32));
        var x = torch.full(2, 40, 7f);
        x[1, 3] = float.NaN;
        var y = norm.forward(x);
        Assert.True(y[0].equal(torch.arange(40, dtype: ScalarType.Float32)).all().item<bool>());
        Assert.True(y[1].isnan().all().item<bool>());
    }
}
