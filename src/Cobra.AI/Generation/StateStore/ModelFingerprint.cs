using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Cobra.AI.Loading;
using Cobra.AI.Modeling.Mamba;
using static TorchSharp.torch;

namespace Cobra.AI.Generation.StateStore;

/// <summary>
/// A content hash of a loaded model, so that replicas agree on it without coordination and a snapshot of another
/// model is never loaded. Model files carry no content hash of their own (only converted bundles do, and not in a
/// place every source exposes), and hashing 6 GB of weights at every start is too slow, so this hashes: every
/// config and the tokenizer in full, and of each weight file its length, its first and last 1 MiB (safetensors
/// and pickle headers: every tensor name, shape and offset) and 32 evenly spaced 64 KiB samples. A fine-tune
/// changes every sample; an edit confined to unsampled bytes of one weight file would go unnoticed.
/// </summary>
internal static class ModelFingerprint
{
    private const int EdgeBytes = 1 << 20;
    private const int SampleBytes = 64 << 10;
    private const int Samples = 32;
    private const long WholeFileLimit = 8L << 20;

    /// <summary>SHA-256 over the model's files as described above.</summary>
    public static byte[] Compute(CobraModelFiles files)
    {
        ArgumentNullException.ThrowIfNull(files);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData("cobra-model-fingerprint/1\n"u8);
        sha.AppendData(Encoding.UTF8.GetBytes(files.ModelId + "\n"));
        var paths = new List<string?>
        {
            files.CobraConfigPath, files.LlmConfigPath, files.TokenizerPath, files.CheckpointPath,
            files.Vision?.DinoWeights, files.Vision?.DinoConfig, files.Vision?.SigLipWeights, files.Vision?.SigLipConfig,
        };
        foreach (var path in paths)
        {
            AppendFile(sha, path);
        }

        return sha.GetHashAndReset();
    }

    /// <summary>
    /// The 32-byte identity snapshots carry and keys start with: the fingerprint plus the state's dtype and
    /// shapes (an fp32 and a bf16 replica of one model keep separate snapshots).
    /// </summary>
    public static byte[] Identity(ReadOnlySpan<byte> fingerprint, MambaConfig config, ScalarType dtype)
    {
        Span<byte> tail = stackalloc byte[2 + (4 * 4)];
        BinaryPrimitives.WriteUInt16LittleEndian(tail, (ushort)dtype);
        BinaryPrimitives.WriteInt32LittleEndian(tail[2..], config.NLayer);
        BinaryPrimitives.WriteInt32LittleEndian(tail[6..], config.DInner);
        BinaryPrimitives.WriteInt32LittleEndian(tail[10..], config.DConv);
        BinaryPrimitives.WriteInt32LittleEndian(tail[14..], config.DState);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(fingerprint);
        sha.AppendData(tail);
        return sha.GetHashAndReset();
    }

    private static void AppendFile(IncrementalHash sha, string? path)
    {
        Span<byte> length = stackalloc byte[8];
        if (path is null)
        {
            BinaryPrimitives.WriteInt64LittleEndian(length, -1);
            sha.AppendData(length);
            return;
        }

        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess);
        BinaryPrimitives.WriteInt64LittleEndian(length, file.Length);
        sha.AppendData(length);
        if (file.Length <= WholeFileLimit)
        {
            AppendRange(sha, file, new byte[file.Length], 0, (int)file.Length);
            return;
        }

        var buffer = new byte[EdgeBytes];
        AppendRange(sha, file, buffer, 0, EdgeBytes);
        AppendRange(sha, file, buffer, file.Length - EdgeBytes, EdgeBytes);
        long stride = (file.Length - SampleBytes) / (Samples + 1);
        for (int i = 1; i <= Samples; i++)
        {
            AppendRange(sha, file, buffer, i * stride, SampleBytes);
        }
    }

    private static void AppendRange(IncrementalHash sha, FileStream file, byte[] buffer, long offset, int count)
    {
        var span = buffer.AsSpan(0, count);
        int read = 0;
        while (read < count)
        {
            int n = RandomAccess.Read(file.SafeFileHandle, span[read..], offset + read);
            if (n == 0)
            {
                throw new EndOfStreamException($"{file.Name}: shorter than its length while fingerprinting.");
            }

            read += n;
        }

        sha.AppendData(span);
    }
}
