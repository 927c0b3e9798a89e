using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Loading;

public sealed class HandBuiltCheckpointTests : IDisposable
{
    private readonly TempFiles temp = new();

    public HandBuiltCheckpointTests() => TorchRuntime.EnsureInitialized();

    public void Dispose() => temp.Dispose();

    private static float[] Range(int n) => Enumerable.Range(0, n).Select(i => (float)i).ToArray();

    private string WriteViews()
    {
        // Storage 0: 12 floats shared by four views; storage 1: a 3x4 matrix saved transposed.
        var tree = new List<(string, object)>
        {
            ("first_half", new FakeTensor("0", "FloatStorage", 12, 0, [6], [1])),
            ("second_half", new FakeTensor("0", "FloatStorage", 12, 6, [2, 3], [3, 1])),
            ("whole", new FakeTensor("0", "FloatStorage", 12, 0, [3, 4], [4, 1])),
            ("outer", new List<(string, object)>
            {
                ("inner", new List<(string, object)> { ("transposed", new FakeTensor("1", "FloatStorage", 12, 0, [4, 3], [1, 4])) }),
            }),
            ("bf16", new FakeTensor("2", "BFloat16Storage", 3, 0, [3], [1])),
        };
        var path = temp.Path("views.pt");
        TorchSaveWriter.WriteZip(path, TorchSaveWriter.PickleTree(tree), new Dictionary<string, byte[]>
        {
            ["0"] = TempFiles.Floats(Range(12)),
            ["1"] = TempFiles.Floats(Range(12).Select(v => v + 100).ToArray()),
            // bf16 is the upper half of float32: 1.5, -2, 3.25.
            ["2"] = [0xc0, 0x3f, 0x00, 0xc0, 0x50, 0x40],
        });
        return path;
    }

    [Fact]
    public void View_with_storage_offset_reads_its_own_half()
    {
        using var pt = PyTorchCheckpoint.Open(WriteViews());
        using var first = pt.Read("first_half");
        using var second = pt.Read("second_half");

        Assert.Equal([0f, 1, 2, 3, 4, 5], first.data<float>().ToArray());
        Assert.Equal(new long[] { 2, 3 }, second.shape);
        Assert.Equal([6f, 7, 8, 9, 10, 11], second.data<float>().ToArray());
    }

    [Fact]
    public void Non_contiguous_tensor_is_gathered_like_torch()
    {
        using var pt = PyTorchCheckpoint.Open(WriteViews());
        using var transposed = pt.Read("outer.inner.transposed");
        using var expected = (arange(12, dtype: ScalarType.Float32) + 100).reshape(3, 4).t().contiguous();

        Assert.Equal(new long[] { 4, 3 }, transposed.shape);
        Assert.Equal(expected.data<float>().ToArray(), transposed.data<float>().ToArray());
    }

    [Fact]
    public void Keys_sharing_one_storage_read_the_same_values()
    {
        using var pt = PyTorchCheckpoint.Open(WriteViews());
        using var whole = pt.Read("whole");
        using var first = pt.Read("first_half");
        using var head = whole.reshape(-1).narrow(0, 0, 6);

        Assert.Equal(Range(12), whole.data<float>().ToArray());
        Assert.True(head.equal(first).all().item<bool>());
    }

    [Fact]
    public void Bf16_tensor_keeps_its_dtype_and_converts_on_ReadInto()
    {
        using var pt = PyTorchCheckpoint.Open(WriteViews());
        using var stored = pt.Read("bf16");
        using var converted = zeros(3, dtype: ScalarType.Float32);
        pt.ReadInto("bf16", converted);

        Assert.Equal(ScalarType.BFloat16, stored.dtype);
        Assert.Equal([1.5f, -2f, 3.25f], converted.data<float>().ToArray());
    }

    [Fact]
    public void Nested_dicts_flatten_to_dotted_keys_in_order()
    {
        using var pt = PyTorchCheckpoint.Open(WriteViews());

        Assert.Equal(["first_half", "second_half", "whole", "outer.inner.transposed", "bf16"], pt.Keys);
    }

    [Fact]
    public void ReadInto_fills_views_straight_and_gathers_strided_ones()
    {
        using var pt = PyTorchCheckpoint.Open(WriteViews());
        using var half = zeros(new long[] { 2, 3 });
        using var transposed = zeros(new long[] { 4, 3 }, dtype: ScalarType.Float64);
        pt.ReadInto("second_half", half);
        pt.ReadInto("outer.inner.transposed", transposed);

        Assert.Equal([6f, 7, 8, 9, 10, 11], half.data<float>().ToArray());
        Assert.Equal([100d, 104, 108], transposed[0].data<double>().ToArray());
    }

    [Fact]
    public void Empty_tensor_with_odd_strides_reads_as_empty()
    {
        var path = temp.Path("empty.pt");
        var pickle = TorchSaveWriter.PickleTree([("e", new FakeTensor("0", "FloatStorage", 0, 0, [0, 3], [1, 5]))]);
        TorchSaveWriter.WriteZip(path, pickle, new Dictionary<string, byte[]> { ["0"] = [] });
        using var pt = PyTorchCheckpoint.Open(path);
        using var empty = pt.Read("e");

        Assert.Equal(new long[] { 0, 3 }, empty.shape);
    }

    [Fact]
    public void Chunked_fill_writes_through_narrowed_views()
    {
        // Large tensors are filled 1 GiB at a time; a tiny chunk exercises the same path.
        using var target = zeros(10, dtype: ScalarType.Int32);
        TensorBytes.Fill(target, (offset, span) =>
        {
            for (var i = 0; i < span.Length; i += 4)
            {
                BitConverter.TryWriteBytes(span[i..], (int)((offset + i) / 4) * 10);
            }
        }, chunkBytes: 12);

        Assert.Equal(Enumerable.Range(0, 10).Select(i => i * 10).ToArray(), target.data<int>().ToArray());
    }
}
