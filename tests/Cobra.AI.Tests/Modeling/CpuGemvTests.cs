using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

public sealed class CpuGemvTests
{
    public CpuGemvTests() => TorchRuntime.EnsureInitialized();

    public static TheoryData<int> Widths() => new() { 128, 256, 512 };

    [Theory]
    [InlineData(1, 37, 61, false)]
    [InlineData(1, 2560, 10240, false)]
    [InlineData(2, 160, 5120, true)]
    [InlineData(3, 5120, 2563, true)]
    [InlineData(4, 9, 4, false)]
    [InlineData(5, 96, 7, true)]
    [InlineData(17, 100, 33, true)]
    [InlineData(64, 2560, 260, false)]
    public void Equals_libtorch_linear(int rows, int inFeatures, int outFeatures, bool withBias)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(rows, 1, inFeatures);
        var w = torch.randn(outFeatures, inFeatures);
        var b = withBias ? torch.randn(outFeatures) : null;
        Assert.Equal(rows <= CpuGemv.MaxRows, CpuGemv.Supports(x, w, b));     // the kernel itself takes any row count
        var expected = torch.nn.functional.linear(x, w, b);
        var actual = CpuGemv.Linear(x, w, b);
        Assert.Equal(expected.shape, actual.shape);
        Golden.AssertClose(expected, actual, "gemv", tolerance: 1e-5);
    }

    [Theory]
    [InlineData(1, 2560, 10240, false)]
    [InlineData(3, 160, 5121, true)]
    [InlineData(2, 18, 7, false)]
    [InlineData(8, 162, 12, true)]
    [InlineData(64, 512, 40, false)]
    public void Bf16_equals_libtorch_within_bf16_rounding(int rows, int inFeatures, int outFeatures, bool withBias)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(rows, inFeatures).to(ScalarType.BFloat16);
        var w = torch.randn(outFeatures, inFeatures).to(ScalarType.BFloat16);
        var b = withBias ? torch.randn(outFeatures).to(ScalarType.BFloat16) : null;
        Assert.Equal(rows <= CpuGemv.MaxRows, CpuGemv.Supports(x, w, b));
        var expected = torch.nn.functional.linear(x.to(ScalarType.Float32), w.to(ScalarType.Float32), b?.to(ScalarType.Float32));
        var actual = CpuGemv.Linear(x, w, b);
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        Golden.AssertClose(expected, actual.to(ScalarType.Float32), "bf16 gemv", tolerance: 1e-2);
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void Every_register_width_computes_the_same_product(int simdBits)
    {
        using var scope = torch.NewDisposeScope();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var x = torch.randn(5, 200).to(dtype);                                 // 200: blocks and a tail at every width
            var w = torch.randn(9, 200).to(dtype);
            var b = torch.randn(9).to(dtype);
            var expected = torch.nn.functional.linear(x.to(ScalarType.Float32), w.to(ScalarType.Float32), b.to(ScalarType.Float32));
            var actual = CpuGemv.Linear(x, w, b, simdBits).to(ScalarType.Float32);
            Golden.AssertClose(expected, actual, $"{dtype} gemv at {simdBits} bits", tolerance: dtype == ScalarType.Float32 ? 1e-5 : 1e-2);
        }
    }

    /// <summary>A row's result must not depend on how many rows share the call (a decode batch's logits).</summary>
    [Theory]
    [InlineData(ScalarType.BFloat16, 2)]
    [InlineData(ScalarType.BFloat16, 3)]
    [InlineData(ScalarType.BFloat16, 4)]
    [InlineData(ScalarType.BFloat16, 5)]
    [InlineData(ScalarType.BFloat16, 9)]
    [InlineData(ScalarType.BFloat16, 64)]
    [InlineData(ScalarType.Float32, 2)]
    [InlineData(ScalarType.Float32, 7)]
    [InlineData(ScalarType.Float32, 64)]
    public void Each_row_is_computed_exactly_as_a_lone_row(ScalarType dtype, int rows)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(rows, 1000).to(dtype);                                 // 1000: a scalar tail at every width
        var w = torch.randn(515, 1000).to(dtype);                                  // 515: a partial group of four rows
        var b = torch.randn(515).to(dtype);
        var batch = CpuGemv.Linear(x, w, b);
        for (int row = 0; row < rows; row++)
        {
            var alone = CpuGemv.Linear(x.narrow(0, row, 1), w, b);
            Assert.True(alone.equal(batch.narrow(0, row, 1)).all().item<bool>(), $"row {row} of {rows} differs from the same row alone");
        }
    }

    [Fact]
    public void Rounds_bf16_outputs_to_nearest_even_once()
    {
        using var scope = torch.NewDisposeScope();
        using var generator = new torch.Generator(7);                             // fixed draws: no output sits on a rounding tie
        var x = torch.randn([3, 64], generator: generator).to(ScalarType.BFloat16);
        var w = torch.randn([50, 64], generator: generator).to(ScalarType.BFloat16);
        var expected = torch.nn.functional.linear(x.to(ScalarType.Float32), w.to(ScalarType.Float32));
        var managed = CpuGemv.Linear(x, w, null);
        var float32 = CpuGemv.Linear(x.to(ScalarType.Float32), w.to(ScalarType.Float32), null);
        Assert.True(managed.equal(float32.to(ScalarType.BFloat16)).all().item<bool>(), "bf16 output is not the float32 result rounded once");
        Golden.AssertClose(expected, float32, "float32 of bf16 inputs", tolerance: 1e-5);
        Assert.Equal((ushort)0x3F80, BFloat16Bits.Round(1.0f));
        Assert.Equal((ushort)0x3F80, BFloat16Bits.Round(BitConverter.Int32BitsToSingle(0x3F808000)));   // tie -> even
        Assert.Equal((ushort)0x3F82, BFloat16Bits.Round(BitConverter.Int32BitsToSingle(0x3F818000)));   // tie -> even (up)
        Assert.True(float.IsNaN(BitConverter.Int32BitsToSingle(BFloat16Bits.Round(float.NaN) << 16)));
    }

    [Fact]
    public void Leaves_what_it_does_not_handle_to_libtorch()
    {
        using var scope = torch.NewDisposeScope();
        var w = torch.randn(8, 16);
        Assert.False(CpuGemv.Supports(torch.randn(CpuGemv.MaxRows + 1, 16), w));  // a prompt-sized input
        Assert.False(CpuGemv.Supports(torch.randn(1, 15).to(ScalarType.BFloat16), torch.randn(8, 15).to(ScalarType.BFloat16))); // odd K in bf16
        Assert.False(CpuGemv.Supports(torch.randn(1, 8), torch.randn(16, 8).t())); // non-contiguous weight
        Assert.False(CpuGemv.Supports(torch.randn(1, 16), w, torch.randn(7)));      // bias of the wrong length
        Assert.False(CpuGemv.Supports(torch.randn(1, 16), w, torch.randn(8).to(ScalarType.BFloat16))); // bias of another dtype
    }
}
