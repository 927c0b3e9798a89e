using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Modeling.Kernels;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Modeling;

public sealed class SelectiveScanTests
{
    private const int Chunk = 8;

    public SelectiveScanTests() => TorchRuntime.EnsureInitialized();

    public static TheoryData<int, int, bool> Cases()
    {
        var data = new TheoryData<int, int, bool>();
        foreach (int length in new[] { 1, 2, Chunk - 1, Chunk, Chunk + 1, 1000 })
        {
            data.Add(length, 16, false);
            data.Add(length, 16, true);
        }

        data.Add(37, 4, false);
        data.Add(37, 7, true);
        data.Add(300, 1, true);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Chunked_and_cpu_kernel_equal_the_sequential_oracle(int length, int dState, bool withInitialState)
    {
        using var scope = torch.NewDisposeScope();
        var inputs = RandomInputs(batch: 2, length, channels: 20, dState, seed: length * 31 + dState);
        var initial = withInitialState ? torch.randn(2, 20, dState) : null;

        var (yRef, hRef) = SelectiveScan.Sequential(inputs, initial);
        var (yChunk, hChunk) = SelectiveScan.Chunked(inputs, initial, Chunk);
        var (yCpu, hCpu) = SelectiveScanCpu.Run(inputs, initial);

        AssertClose(yRef, yChunk, "chunked output");
        AssertClose(hRef, hChunk, "chunked state");
        AssertClose(yRef, yCpu, "cpu output");
        AssertClose(hRef, hCpu, "cpu state");
    }

    /// <summary>Channel counts that split into pairs of blocks, a lone block and a partial tail at every register width.</summary>
    [Theory]
    [InlineData(44)]
    [InlineData(56)]
    [InlineData(5)]
    public void Cpu_kernel_equals_the_oracle_for_every_channel_split(int channels)
    {
        using var scope = torch.NewDisposeScope();
        var inputs = RandomInputs(batch: 2, length: 23, channels, dState: 16, seed: channels);
        var initial = torch.randn(2, channels, 16);
        var (yRef, hRef) = SelectiveScan.Sequential(inputs, initial);
        var (yCpu, hCpu) = SelectiveScanCpu.Run(inputs, initial);
        AssertClose(yRef, yCpu, $"cpu output, {channels} channels");
        AssertClose(hRef, hCpu, $"cpu state, {channels} channels");
    }

    /// <summary>The 512-bit kernel does the 256-bit one's operations lane by lane: identical outputs and states, float32 and bf16.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Cpu_kernel_gives_the_same_result_at_every_register_width(bool bf16)
    {
        using var scope = torch.NewDisposeScope();
        var inputs = RandomInputs(batch: 2, length: 37, channels: 100, dState: 16, seed: 11);
        if (bf16)
        {
            inputs = inputs with { U = inputs.U.to(ScalarType.BFloat16), Delta = inputs.Delta.to(ScalarType.BFloat16), Z = inputs.Z.to(ScalarType.BFloat16) };
        }

        var initial = torch.randn(2, 100, 16);
        var (y256, h256) = SelectiveScanCpu.Run(inputs, initial, simdBits: 256);
        var (y512, h512) = SelectiveScanCpu.Run(inputs, initial, simdBits: 512);
        Assert.True(y256.equal(y512).all().item<bool>(), "outputs");
        Assert.True(h256.equal(h512).all().item<bool>(), "states");
        AssertClose(SelectiveScan.Sequential(inputs, initial).Output.to(ScalarType.Float32), y512.to(ScalarType.Float32), "512-bit output", bf16 ? 1e-2 : 1e-5);
    }

    /// <summary>
    /// The native kernel (d_state 16, 512-bit blocks) does the managed 512-bit kernel's operations: identical outputs
    /// and states, float32 and bf16, from zeros and from a state, with a ragged tail (100 channels: 96 native + 4) and
    /// Δ from softplus's three regimes (large, mid, very negative). A changed operation order or a contracted FMA fails.
    /// </summary>
    [Theory]
    [InlineData(false, 37, 100, false)]
    [InlineData(true, 37, 100, true)]
    [InlineData(true, 130, 512, true)]
    [InlineData(false, 1, 32, true)]
    public void Native_scan_gives_the_managed_kernels_bits(bool bf16, int length, int channels, bool withInitialState)
    {
        if (!NativeBf16Kernels.IsAvailable)
        {
            return;                                                              // NativeBf16KernelsTests.Loads_wherever_the_cpu_has_avx512_bf16 says why
        }

        using var scope = torch.NewDisposeScope();
        var inputs = RandomInputs(batch: 2, length, channels, dState: 16, seed: length + channels);
        var delta = inputs.Delta * 12;                                           // softplus past 20, around 0, and far below
        var dtype = bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        inputs = inputs with { U = inputs.U.to(dtype), Delta = delta.to(dtype), Z = inputs.Z.to(dtype) };
        var initial = withInitialState ? torch.randn(2, channels, 16) : null;
        var (yManaged, hManaged) = SelectiveScanCpu.Run(inputs, initial, simdBits: 512, native: false);
        var (yNative, hNative) = SelectiveScanCpu.Run(inputs, initial, simdBits: 512, native: true);
        Assert.True(yManaged.equal(yNative).all().item<bool>(), "outputs");
        Assert.True(hManaged.equal(hNative).all().item<bool>(), "states");
    }

    /// <summary>The gate read in place from in_proj's [B, L, 2D] output (rows 2D apart) gives the bits of a contiguous copy, at every width (channels 100: a ragged tail too).</summary>
    [Theory]
    [InlineData(false, 256)]
    [InlineData(false, 512)]
    [InlineData(true, 512)]
    public void Cpu_kernel_reads_the_gate_in_place_from_the_projection_output(bool bf16, int simdBits)
    {
        using var scope = torch.NewDisposeScope();
        var dtype = bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        var inputs = RandomInputs(batch: 2, length: 9, channels: 100, dState: 16, seed: 12);
        var xz = torch.randn(2, 9, 200).to(dtype);                               // [B,L,2D]: x | z
        var inPlace = inputs with { U = inputs.U.to(dtype), Delta = inputs.Delta.to(dtype), Z = xz.narrow(-1, 100, 100) };
        var copied = inPlace with { Z = inPlace.Z.contiguous() };
        var initial = torch.randn(2, 100, 16);
        var (y, h) = SelectiveScanCpu.Run(inPlace, initial, simdBits);
        var (yCopy, hCopy) = SelectiveScanCpu.Run(copied, initial, simdBits);
        Assert.True(y.equal(yCopy).all().item<bool>(), "outputs");
        Assert.True(h.equal(hCopy).all().item<bool>(), "states");
        var transposed = inPlace with { Z = xz.narrow(-1, 100, 100).transpose(0, 1).contiguous().transpose(0, 1) }; // rows unevenly spaced: copied first
        Assert.True(SelectiveScanCpu.Run(transposed, initial, simdBits).Output.equal(yCopy).all().item<bool>(), "a gate whose rows are not evenly spaced");
    }

    [Fact]
    public void Chunk_size_does_not_change_the_result()
    {
        using var scope = torch.NewDisposeScope();
        var inputs = RandomInputs(batch: 1, length: 100, channels: 9, dState: 16, seed: 7);
        var (y1, h1) = SelectiveScan.Chunked(inputs, null, 1);
        var (y100, h100) = SelectiveScan.Chunked(inputs, null, 100);
        var (y128, h128) = SelectiveScan.Chunked(inputs, null, 128);
        AssertClose(y1, y100, "chunk 1 vs 100");
        AssertClose(y1, y128, "chunk 1 vs 128");
        AssertClose(h1, h128, "state chunk 1 vs 128");
    }

    [Fact]
    public void Strong_decay_does_not_overflow()
    {
        // Δ·A as large as −5000 per step: a factorised exp(−cumsum) scan would overflow to inf/nan here.
        using var scope = torch.NewDisposeScope();
        var inputs = RandomInputs(batch: 1, length: 64, channels: 8, dState: 16, seed: 3) with
        {
            DeltaBias = torch.full(8, 300f),
        };
        var (yRef, _) = SelectiveScan.Sequential(inputs, null);
        var (yChunk, _) = SelectiveScan.Chunked(inputs, null, 32);
        Assert.False(yChunk.isnan().any().item<bool>());
        AssertClose(yRef, yChunk, "strong decay");
    }

    internal static ScanInputs RandomInputs(int batch, int length, int channels, int dState, long seed)
    {
        var g = new Generator((ulong)seed);
        return new ScanInputs(
            U: torch.randn([batch, length, channels], generator: g),
            Delta: torch.randn([batch, length, channels], generator: g),
            A: torch.rand([channels, dState], generator: g).mul_(15).add_(1).neg_(),
            B: torch.randn([batch, length, dState], generator: g),
            C: torch.randn([batch, length, dState], generator: g),
            DSkip: torch.randn([channels], generator: g),
            Z: torch.randn([batch, length, channels], generator: g),
            DeltaBias: torch.rand([channels], generator: g).mul_(4).sub_(3));
    }

    internal static void AssertClose(Tensor expected, Tensor actual, string what, double relTol = 1e-5)
    {
        Assert.Equal(expected.shape, actual.shape);
        double scale = Math.Max(1.0, expected.abs().max().item<float>());
        double maxDiff = (expected - actual).abs().max().item<float>();
        Assert.True(maxDiff <= relTol * scale, $"{what}: max |diff| {maxDiff:E3} > {relTol * scale:E3}");
    }
}
