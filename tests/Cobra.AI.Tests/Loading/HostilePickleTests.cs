using Cobra.AI.Loading;
using Xunit;

namespace Cobra.AI.Tests.Loading;

/// <summary>
/// Checkpoints built to exhaust time or memory from a few bytes: each must be refused by a named bound, and a
/// normal checkpoint must open right after.
/// </summary>
public sealed class HostilePickleTests : IDisposable
{
    private readonly TempFiles temp = new();

    public void Dispose() => temp.Dispose();

    private static void AssertRefused(string path, string problem)
    {
        var error = Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Open(path).Dispose());
        Assert.Contains(path, error.Message);
        Assert.Contains(problem, error.Message);
    }

    /// <summary>A normal one-tensor checkpoint still opens and reads after a refusal.</summary>
    private void AssertNormalCheckpointWorks()
    {
        var path = temp.Path("normal.pt");
        var pickle = TorchSaveWriter.PickleTree([("w", new FakeTensor("0", "FloatStorage", 4, 0, [2, 2], [2, 1]))]);
        TorchSaveWriter.WriteZip(path, pickle, new Dictionary<string, byte[]> { ["0"] = TempFiles.Floats(1, 2, 3, 4) });
        using var checkpoint = PyTorchCheckpoint.Open(path);
        using var tensor = checkpoint.Read("w");
        Assert.Equal([1f, 2f, 3f, 4f], tensor.data<float>().ToArray());
    }

    [Fact]
    public void Dicts_shared_through_the_memo_are_refused_instead_of_expanding_exponentially()
    {
        // Level k is {"a": level k+1, "b": level k+1} (the second a memo recall): 40 levels in under 1 KB
        // would flatten to 2^40 keys.
        const int levels = 40;
        var writer = new TorchSaveWriter();
        writer.Op(0x80).Op(2);
        for (int k = 0; k < levels; k++)
        {
            writer.Op('}').Op('q').Op(k).Op('(').Str("a");
        }

        writer.Op('}').Op('q').Op(levels);
        for (int k = levels - 1; k >= 0; k--)
        {
            writer.Str("b").Op('h').Op(k + 1).Op('u');
        }

        writer.Op('.');
        var bytes = writer.ToArray();
        Assert.True(bytes.Length < 1200, $"{bytes.Length} bytes");
        var path = temp.Path("shared.pt");
        TorchSaveWriter.WriteZip(path, bytes, new Dictionary<string, byte[]>());

        AssertRefused(path, "is the same object as the one at");
        AssertNormalCheckpointWorks();
    }

    [Fact]
    public void Rebuilding_a_memoized_dict_over_and_over_exceeds_the_work_budget()
    {
        // A 1,000-entry dict applied with BUILD 20,000 times: 100 KB of pickle, 20 million item copies.
        var writer = new TorchSaveWriter();
        writer.Op(0x80).Op(2).Op('}').Op('q').Op(0).Op('}').Op('(');
        for (int i = 0; i < 1000; i++)
        {
            writer.Str($"k{i}").Op('N');
        }

        writer.Op('u').Op('q').Op(1);
        for (int i = 0; i < 20_000; i++)
        {
            writer.Op('h').Op(0).Op('h').Op(1).Op('b');
        }

        writer.Op('.');
        var path = temp.Path("rebuild.pt");
        TorchSaveWriter.WriteZip(path, writer.ToArray(), new Dictionary<string, byte[]>());

        AssertRefused(path, "units of work");
        AssertNormalCheckpointWorks();
    }

    [Fact]
    public void Stride_zero_view_with_a_huge_shape_is_refused_before_allocating()
    {
        // One float of storage viewed as 300M floats (1.2 GB if materialised).
        var path = temp.Path("stride0.pt");
        var tensor = new FakeTensor("0", "FloatStorage", 1, 0, [1, 300_000, 1000], [0, 0, 0]);
        TorchSaveWriter.WriteZip(path, TorchSaveWriter.PickleTree([("pos_embed", tensor)]), new Dictionary<string, byte[]> { ["0"] = TempFiles.Floats(1) });

        AssertRefused(path, "has 300000000 elements, more than the 1 of storage '0'");
        AssertNormalCheckpointWorks();
    }

    [Fact]
    public void A_deflated_storage_that_would_expand_a_thousandfold_is_refused_before_reading()
    {
        // 64 MB of zeros deflates to about 64 KB; its declared size would be allocated when the tensor is read.
        const long numel = 16L << 20;
        var path = temp.Path("bomb.pt");
        var pickle = TorchSaveWriter.PickleTree([("pos_embed", new FakeTensor("0", "FloatStorage", numel, 0, [1, numel / 1024, 1024], [numel, 1024, 1]))]);
        using (var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create))
        {
            using (var stream = zip.CreateEntry("archive/data.pkl", System.IO.Compression.CompressionLevel.NoCompression).Open())
            {
                stream.Write(pickle);
            }

            using var storage = zip.CreateEntry("archive/data/0", System.IO.Compression.CompressionLevel.Optimal).Open();
            var zeros = new byte[1 << 20];
            for (int i = 0; i < numel * 4 / zeros.Length; i++)
            {
                storage.Write(zeros);
            }
        }

        Assert.True(new FileInfo(path).Length < 1 << 20);
        AssertRefused(path, "storage '0' expands from");
        AssertNormalCheckpointWorks();
    }

    [Theory]
    [InlineData(-1L, new long[] { 2 }, new long[] { 1 }, "negative offset, size or stride")]
    [InlineData(0L, new long[] { -2 }, new long[] { 1 }, "negative offset, size or stride")]
    [InlineData(0L, new long[] { 2 }, new long[] { -1 }, "negative offset, size or stride")]
    [InlineData(0L, new long[] { 2, 2 }, new long[] { 1 }, "differ in rank")]
    [InlineData(0L, new long[] { 4, 1L << 62 }, new long[] { 1, 1 }, "overflows")]
    [InlineData(0L, new long[] { 2 }, new long[] { 1L << 62 }, "reaches element")]
    [InlineData(3L, new long[] { 2 }, new long[] { 1 }, "reaches element 4 of storage '0', which has 4")]
    public void Bad_views_are_refused_with_the_key(long offset, long[] shape, long[] stride, string problem)
    {
        var path = temp.Path("view.pt");
        var tensor = new FakeTensor("0", "FloatStorage", 4, offset, shape, stride);
        TorchSaveWriter.WriteZip(path, TorchSaveWriter.PickleTree([("w", tensor)]), new Dictionary<string, byte[]> { ["0"] = TempFiles.Floats(1, 2, 3, 4) });

        AssertRefused(path, problem);
        AssertRefused(path, "'w'");
        AssertNormalCheckpointWorks();
    }
}
