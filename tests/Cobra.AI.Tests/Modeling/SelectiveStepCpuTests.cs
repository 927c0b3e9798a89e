using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

/// <summary>The fused decode step against the torch-op step it replaces (its oracle).</summary>
public sealed class SelectiveStepCpuTests
{
    public SelectiveStepCpuTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(ScalarType.Float32, 1, 1e-5, 48)]                               // d_inner 96: a full 64-channel tile and a partial one
    [InlineData(ScalarType.Float32, 3, 1e-5, 48)]
    [InlineData(ScalarType.BFloat16, 1, 1e-2, 48)]
    [InlineData(ScalarType.BFloat16, 5, 1e-2, 48)]
    [InlineData(ScalarType.Float32, 300, 1e-5, 48)]                             // B and C staged on the heap, not the stack
    [InlineData(ScalarType.Float32, 2, 1e-5, 51)]                               // d_inner 102: a tile that ends inside a vector
    [InlineData(ScalarType.BFloat16, 40, 1e-2, 51)]                             // channels split over the workers mid-vector
    [InlineData(ScalarType.Float32, 3, 1e-5, 51, 3)]                            // d_conv 3: the any-width conv, not the 4-channel transpose
    [InlineData(ScalarType.BFloat16, 7, 1e-2, 48, 5)]
    public void Fused_step_equals_the_torch_op_step(ScalarType dtype, int rows, double tolerance, int dModel, int dConv = 4)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var config = new MambaConfig { DModel = dModel, NLayer = 1, VocabSize = 100, DConv = dConv };
        var mixer = new MambaMixer(config, dtype, torch.CPU);
        MambaRandomInit.Fill(mixer, seed: 11);
        using var generator = new torch.Generator(5);
        using var fusedState = MambaState.Zeros(config, rows, torch.CPU);
        using var torchState = MambaState.Zeros(config, rows, torch.CPU);
        var prefill = torch.randn([rows, config.DInner, config.DState], generator: generator);   // a prefill's float32 state
        fusedState.Layers[0].Ssm.copy_(prefill);
        torchState.Layers[0].Ssm.copy_(prefill);
        Assert.True(SelectiveStepCpu.Supports(torch.empty([rows, config.DModel], dtype), fusedState.Layers[0].Conv, fusedState.Layers[0].Ssm));

        for (int step = 0; step < 6; step++)
        {
            var hidden = torch.randn([rows, config.DModel], generator: generator).to(dtype);
            var xz = torch.nn.functional.linear(hidden, mixer.named_parameters().First(p => p.name == "in_proj.weight").parameter);
            var expected = mixer.TorchStep(xz, torchState.Layers[0]);
            var actual = mixer.FusedStep(xz, fusedState.Layers[0]);
            Assert.Equal(dtype, actual.dtype);
            Golden.AssertClose(expected.to(ScalarType.Float32), actual.to(ScalarType.Float32), $"step {step} output", tolerance);
            Golden.AssertClose(torchState.Layers[0].Conv, fusedState.Layers[0].Conv, $"step {step} conv window", 0);
            Golden.AssertClose(torchState.Layers[0].Ssm, fusedState.Layers[0].Ssm, $"step {step} ssm state", tolerance);
        }
    }

    [Fact]
    public void Leaves_what_it_does_not_handle_to_torch_ops()
    {
        using var scope = torch.NewDisposeScope();
        var hidden = torch.empty([1, 8]);
        Assert.False(SelectiveStepCpu.Supports(hidden, torch.zeros([1, 16, 4]), torch.zeros([1, 16, 3])));            // d_state not a multiple of the lanes
        Assert.False(SelectiveStepCpu.Supports(hidden.to(ScalarType.Float16), torch.zeros([1, 16, 4]), torch.zeros([1, 16, 16]))); // fp16
        Assert.False(SelectiveStepCpu.Supports(hidden, torch.zeros([1, 16, 4]), torch.zeros([1, 16, 32]).transpose(1, 2))); // non-contiguous state
    }

    /// <summary>The 512-bit state update (one d_state-16 channel per register) computes what the 256-bit one does.</summary>
    [Theory]
    [InlineData(ScalarType.Float32, 1, 100)]
    [InlineData(ScalarType.BFloat16, 5, 100)]
    [InlineData(ScalarType.BFloat16, 40, 5120)]                                 // split over the workers
    public void Every_register_width_updates_the_state_the_same_way(ScalarType dtype, int rows, int channels)
    {
        using var scope = torch.NewDisposeScope();
        using var generator = new torch.Generator(9);
        Tensor R(params long[] shape) => torch.randn(shape, generator: generator).to(dtype);
        var (x, delta, bc, xz) = (R(rows, channels), R(rows, channels), R(rows, 10 + 32), R(rows, 2 * channels));
        var (aLog, dSkip, deltaBias) = (R(channels, 16), R(channels), R(channels));
        var state = torch.randn([rows, channels, 16], generator: generator);
        var narrowState = state.clone();
        var wide = SelectiveStepCpu.SsmStep(x, delta, bc, xz, state, aLog, dSkip, deltaBias, simdBits: 512);
        var narrow = SelectiveStepCpu.SsmStep(x, delta, bc, xz, narrowState, aLog, dSkip, deltaBias, simdBits: 256);
        Golden.AssertClose(narrow.to(ScalarType.Float32), wide.to(ScalarType.Float32), "output", 0);
        Golden.AssertClose(narrowState, state, "state", 0);
    }

    /// <summary>The 512-bit conv step (16 channels per register after an in-lane transpose) computes what the 4-channel one does.</summary>
    [Theory]
    [InlineData(ScalarType.Float32, 1, 100)]                                    // 6 groups of 16, then one of four
    [InlineData(ScalarType.BFloat16, 5, 102)]                                   // ... and two channels one by one
    [InlineData(ScalarType.BFloat16, 40, 5120)]                                 // split over the workers
    public void Every_register_width_steps_the_conv_the_same_way(ScalarType dtype, int rows, int channels)
    {
        using var scope = torch.NewDisposeScope();
        using var generator = new torch.Generator(13);
        var xz = torch.randn([rows, 2 * channels], generator: generator).to(dtype);
        var (weight, bias) = (torch.randn([channels, 1, 4], generator: generator).to(dtype), torch.randn([channels], generator: generator).to(dtype));
        var window = torch.randn([rows, channels, 4], generator: generator);
        var narrowWindow = window.clone();
        for (int step = 0; step < 3; step++)
        {
            var wide = SelectiveStepCpu.ConvStep(xz, window, weight, bias, simdBits: 512);
            var narrow = SelectiveStepCpu.ConvStep(xz, narrowWindow, weight, bias, simdBits: 256);
            Golden.AssertClose(narrow.to(ScalarType.Float32), wide.to(ScalarType.Float32), $"step {step} output", 0);
            Golden.AssertClose(narrowWindow, window, $"step {step} window", 0);
            xz = torch.randn([rows, 2 * channels], generator: generator).to(dtype);
        }
    }
}
