using Cobra.AI.Loading;
using Xunit;

namespace Cobra.AI.Tests.Loading;

public sealed class PyTorchCheckpointValidationTests : IDisposable
{
    private readonly TempFiles temp = new();

    public void Dispose() => temp.Dispose();

    private static InvalidDataException AssertInvalid(string path, string problem)
    {
        var error = Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Open(path).Dispose());
        Assert.Contains(path, error.Message);
        Assert.Contains(problem, error.Message);
        return error;
    }

    private string WriteOne(FakeTensor tensor, byte[] storage, string name = "one.pt")
    {
        var path = temp.Path(name);
        var pickle = TorchSaveWriter.PickleTree([("w", tensor)]);
        TorchSaveWriter.WriteZip(path, pickle, new Dictionary<string, byte[]> { [tensor.StorageKey] = storage });
        return path;
    }

    [Fact]
    public void Missing_file_names_the_path()
    {
        var path = temp.Path("absent.pt");
        var error = Assert.Throws<FileNotFoundException>(() => PyTorchCheckpoint.Open(path));
        Assert.Contains(path, error.Message);
    }

    [Fact]
    public void Non_zip_file_is_rejected()
    {
        var path = temp.Path("text.pt");
        File.WriteAllText(path, "this is not a zip archive at all");
        AssertInvalid(path, "not a readable torch.save zip archive");
    }

    [Fact]
    public void Truncated_file_is_rejected()
    {
        var whole = WriteOne(new FakeTensor("0", "FloatStorage", 4, 0, [4], [1]), TempFiles.Floats(1, 2, 3, 4));
        var bytes = File.ReadAllBytes(whole);
        var path = temp.Path("truncated.pt");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        AssertInvalid(path, "not a readable torch.save zip archive");
    }

    [Fact]
    public void Disallowed_global_is_refused_before_anything_runs()
    {
        var marker = temp.Path("pwned");
        var writer = new TorchSaveWriter();
        writer.Op(0x80).Op(2).Global("os", "system").Op('(').Str($"touch {marker}").Op('t').Op('R').Op('.');
        var path = temp.Path("evil.pt");
        TorchSaveWriter.WriteZip(path, writer.ToArray(), new Dictionary<string, byte[]>());

        AssertInvalid(path, "pickle references 'os.system', which is not allowed");
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void Unknown_opcode_is_named()
    {
        var path = temp.Path("opcode.pt");
        TorchSaveWriter.WriteZip(path, [0x80, 2, (byte)'i', (byte)'.'], new Dictionary<string, byte[]>());
        AssertInvalid(path, "unsupported pickle opcode 0x69 ('i')");
    }

    [Fact]
    public void Storage_length_must_match_its_numel()
    {
        var path = WriteOne(new FakeTensor("0", "FloatStorage", 4, 0, [4], [1]), TempFiles.Floats(1, 2, 3));
        AssertInvalid(path, "storage '0' holds 12 bytes, but 4 x Float32 needs 16");
    }

    [Fact]
    public void View_past_the_storage_is_rejected_with_its_key()
    {
        var path = WriteOne(new FakeTensor("0", "FloatStorage", 4, 2, [2, 2], [2, 1]), TempFiles.Floats(1, 2, 3, 4));
        var error = AssertInvalid(path, "reaches element 5 of storage '0', which has 4");
        Assert.Contains("'w'", error.Message);
    }

    [Fact]
    public void Missing_storage_entry_is_rejected()
    {
        var path = temp.Path("nostorage.pt");
        var pickle = TorchSaveWriter.PickleTree([("w", new FakeTensor("7", "FloatStorage", 1, 0, [1], [1]))]);
        TorchSaveWriter.WriteZip(path, pickle, new Dictionary<string, byte[]>());
        AssertInvalid(path, "storage '7' has no 'data/7' entry");
    }

    [Fact]
    public void Zip_without_data_pkl_is_rejected()
    {
        var path = temp.Path("nopickle.pt");
        using (var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create))
        {
            zip.CreateEntry("archive/version");
        }

        AssertInvalid(path, "expected one '<archive>/data.pkl' entry, found 0");
    }
}
