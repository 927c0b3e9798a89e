using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests.Loading;

public sealed class SafetensorsValidationTests : IDisposable
{
    private readonly TempFiles temp = new();

    public void Dispose() => temp.Dispose();

    private static void AssertInvalid(string path, string problem, string? key = null)
    {
        var error = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(path, error.Message);
        Assert.Contains(problem, error.Message);
        if (key is not null)
        {
            Assert.Contains($"'{key}'", error.Message);
        }
    }

    [Fact]
    public void Missing_file_names_the_path()
    {
        var path = temp.Path("absent.safetensors");
        var error = Assert.Throws<FileNotFoundException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, error.Message);
    }

    [Fact]
    public void Valid_file_reads_values_and_metadata()
    {
        TorchRuntime.EnsureInitialized();
        var path = temp.Safetensors("ok.safetensors",
            """{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}""",
            TempFiles.Floats(1, 2, 3, 4));
        using var st = SafetensorsFile.Open(path);
        using var w = st.Read("w");
        using var half = zeros(new long[] { 2, 2 }, dtype: ScalarType.Float16);
        st.ReadInto("w", half);

        Assert.Equal("pt", st.Metadata["format"]);
        Assert.Equal([1f, 2, 3, 4], w.data<float>().ToArray());
        Assert.Equal([1f, 2, 3, 4], half.to_type(ScalarType.Float32).data<float>().ToArray());
    }

    [Fact]
    public void Truncated_data_is_rejected()
    {
        var path = temp.Safetensors("cut.safetensors",
            """{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", TempFiles.Floats(1, 2));
        AssertInvalid(path, "run past the end of the 8-byte data section", "w");
    }

    [Fact]
    public void Huge_header_length_is_rejected()
    {
        var path = temp.Safetensors("huge.safetensors", "{}", [], headerLength: ulong.MaxValue);
        AssertInvalid(path, "exceeds the 104857600-byte limit");
    }

    [Fact]
    public void Header_length_past_end_of_file_is_rejected()
    {
        var path = temp.Safetensors("past.safetensors", "{}", [], headerLength: 1000);
        AssertInvalid(path, "runs past the end of the 10-byte file");
    }

    [Fact]
    public void File_shorter_than_the_length_prefix_is_rejected()
    {
        var path = temp.Path("tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        AssertInvalid(path, "shorter than the 8-byte header length");
    }

    [Fact]
    public void Offsets_past_the_end_are_rejected()
    {
        var path = temp.Safetensors("offsets.safetensors",
            """{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", TempFiles.Floats(1, 2));
        AssertInvalid(path, "run past the end", "w");
    }

    [Fact]
    public void Overlapping_tensors_are_rejected()
    {
        var path = temp.Safetensors("overlap.safetensors",
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""",
            TempFiles.Floats(1, 2, 3));
        AssertInvalid(path, "overlaps tensor 'a'", "b");
    }

    [Fact]
    public void Unknown_dtype_is_rejected()
    {
        var path = temp.Safetensors("dtype.safetensors",
            """{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}""", [1, 2, 3, 4]);
        AssertInvalid(path, "unsupported dtype 'F8_E4M3'", "w");
    }

    [Fact]
    public void Dtype_times_shape_must_equal_the_byte_length()
    {
        var path = temp.Safetensors("length.safetensors",
            """{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", TempFiles.Floats(1, 2));
        AssertInvalid(path, "needs 12 bytes but data_offsets span 8", "w");
    }

    [Fact]
    public void Overflowing_shape_is_rejected()
    {
        var path = temp.Safetensors("overflow.safetensors",
            """{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}}""", []);
        AssertInvalid(path, "is too large", "w");
    }

    [Theory]
    [InlineData("[1,2]", "header is a JSON Array, not an object")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", "not a non-negative integer")]
    [InlineData("{\"__metadata__\":{\"n\":1}}", "__metadata__ entry 'n' is not a string")]
    [InlineData("{not json", "header is not valid JSON")]
    public void Malformed_headers_are_rejected(string header, string problem)
    {
        AssertInvalid(temp.Safetensors("bad.safetensors", header, []), problem);
    }

    [Fact]
    public void ReadInto_a_wrong_shape_names_key_file_and_both_shapes()
    {
        TorchRuntime.EnsureInitialized();
        var path = temp.Safetensors("shape.safetensors",
            """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}""", TempFiles.Floats(1, 2, 3, 4));
        using var st = SafetensorsFile.Open(path);
        using var wrong = zeros(4);

        var error = Assert.Throws<InvalidDataException>(() => st.ReadInto("w", wrong));
        Assert.Contains(path, error.Message);
        Assert.Contains("'w'", error.Message);
        Assert.Contains("[2, 2]", error.Message);
        Assert.Contains("[4]", error.Message);
    }

    [Fact]
    public void Unknown_key_names_key_and_file()
    {
        var path = temp.Safetensors("empty.safetensors", "{}", []);
        using var st = SafetensorsFile.Open(path);

        var error = Assert.Throws<KeyNotFoundException>(() => st.GetInfo("nope"));
        Assert.Contains(path, error.Message);
        Assert.Contains("'nope'", error.Message);
    }
}
