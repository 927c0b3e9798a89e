using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

public sealed class ManagedKernelSwitchTests
{
    public ManagedKernelSwitchTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(true, null, true)]
    [InlineData(true, "", true)]
    [InlineData(true, "1", true)]
    [InlineData(false, "1", false)]
    [InlineData(true, "0", false)]
    [InlineData(true, " OFF ", false)]
    [InlineData(true, "false", false)]
    public void The_environment_variable_can_only_turn_the_kernels_off(bool requested, string? value, bool expected) =>
        Assert.Equal(expected, ManagedKernels.Resolve(requested, value));

    [Fact]
    public void An_unknown_environment_value_is_refused_by_name()
    {
        var e = Assert.Throws<InvalidOperationException>(() => ManagedKernels.Resolve(true, "maybe"));
        Assert.Contains(ManagedKernels.EnvironmentVariable, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Switched_off_the_model_runs_the_device_generic_scan_and_libtorch_linear()
    {
        using var scope = torch.NewDisposeScope();
        using var model = new MambaForCausalLM(new MambaConfig { DModel = 32, NLayer = 2, VocabSize = 40 }, ScalarType.Float32, torch.CPU);
        MambaRandomInit.Fill(model, 3);
        var embeds = model.Embed(torch.tensor(new long[] { 5, 1, 7, 2, 9, 3, 3, 8, 1, 0, 4 }).unsqueeze(0));

        Tensor Prefill(ScanImplementation? scan)
        {
            using var state = model.NewState();
            return model.Forward(embeds, state, allPositions: true, scan);
        }

        Tensor Decode()
        {
            using var state = model.NewState();
            model.Forward(embeds, state);
            return torch.stack([.. new long[] { 3, 9, 1 }.Select(id => model.Step(torch.tensor(new[] { id }), state))]); // [3,1,V]
        }

        var managed = Prefill(null);
        var managedSteps = Decode();
        Assert.True(managed.equal(Prefill(SelectiveScanCpu.Run)).all().item<bool>());
        ManagedKernels.Configure(model, enabled: false);
        var linears = model.named_modules().Select(m => m.module).OfType<Cobra.AI.Modeling.Linear>().ToArray();
        Assert.Equal(4 * 2, linears.Length);
        Assert.DoesNotContain(linears, l => l.UseManagedKernels);
        var switches = model.named_modules().Select(m => m.module).OfType<IManagedKernelSwitch>().ToArray();
        Assert.Equal((4 * 2) + 2 + 2 + 1, switches.Length);                      // linears, mixers (conv, step), block norms, norm_f
        Assert.DoesNotContain(switches, k => k.UseManagedKernels);
        Assert.False(model.UseManagedKernels);
        Golden.AssertClose(managedSteps, Decode(), "device-generic vs managed decode steps");
        var generic = Prefill(null);
        Assert.True(generic.equal(Prefill(SelectiveScan.DeviceGeneric)).all().item<bool>());
        Assert.False(generic.equal(managed).all().item<bool>(), "the two paths round differently, so the switch is visible");
        Golden.AssertClose(managed, generic, "device-generic vs managed prefill");
    }
}
