using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>The prefill's fused conv + SiLU against the torch-op conv it replaces, over chunks that carry the conv state.</summary>
public sealed class CausalConvCpuTests
{
    public CausalConvCpuTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(ScalarType.Float32, 1e-5)]
    [InlineData(ScalarType.BFloat16, 1e-2)]
    public void Chunked_prefill_equals_the_torch_op_conv(ScalarType dtype, double tolerance)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var config = new MambaConfig { DModel = 44, NLayer = 1, VocabSize = 100 };   // d_inner 88: a partial lane block
        var mixer = new MambaMixer(config, dtype, torch.CPU);
        MambaRandomInit.Fill(mixer, seed: 4);
        using var generator = new torch.Generator(9);
        using var fused = MambaState.Zeros(config, 2, torch.CPU);
        using var plain = MambaState.Zeros(config, 2, torch.CPU);
        foreach (int length in new[] { 5, 2, 1, 9 })
        {
            var hidden = torch.randn([2, length, config.DModel], generator: generator).to(dtype);
            mixer.UseManagedKernels = false;
            var expected = mixer.Forward(hidden, plain.Layers[0], SelectiveScan.Sequential);
            mixer.UseManagedKernels = true;
            Assert.True(CausalConvCpu.Supports(torch.empty([2, length, 2 * config.DInner], dtype), fused.Layers[0].Conv));
            var actual = mixer.Forward(hidden, fused.Layers[0], SelectiveScan.Sequential);
            Golden.AssertClose(plain.Layers[0].Conv, fused.Layers[0].Conv, $"conv state after {length}", 0);
            Golden.AssertClose(expected.to(ScalarType.Float32), actual.to(ScalarType.Float32), $"mixer output, chunk of {length}", tolerance);
            Golden.AssertClose(plain.Layers[0].Ssm, fused.Layers[0].Ssm, $"ssm state after {length}", tolerance);
        }
    }
}
