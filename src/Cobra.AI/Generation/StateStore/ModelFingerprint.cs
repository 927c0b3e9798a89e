using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Cobra.AI.Modeling.Mamba;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation.StateStore;

/// <summary>
/// A content hash of a loaded model, so that replicas agree on it without coordination and a snapshot of another
/// model is never loaded. Model files carry no content hash of their own (only converted bundles do, and a model
/// can be built in memory), and hashing 6 GB of weights at every start is too slow, so this hashes what was
/// loaded: every tensor's name, dtype and shape (projector, LLM, towers), 64 evenly spaced values of each (as
/// float32, wherever it lives), the tokenizer's size, end-of-text id and the ids of a probe text, and the prompt
/// length limit. A fine-tune changes the sampled values; an edit confined to unsampled values would go unnoticed.
/// </summary>
internal static class ModelFingerprint
{
    private const int SamplesPerTensor = 64;
    private const string TokenizerProbe = "<|user|>\nWhat is in this image? 1234 naïve ✓<|endoftext|>\n<|assistant|>\n";

    /// <summary>SHA-256 over the pipeline's model and tokenizer as described above. Reads tensors (at load time, before the engine runs).</summary>
    public static byte[] Compute(CobraPipeline pipeline)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData("cobra-model-fingerprint/1\n"u8);
        var model = pipeline.Model;
        AppendModule(sha, "projector.", model.Projector);
        AppendModule(sha, "llm.", model.LanguageModel);
        AppendModule(sha, "vision.", model.Vision);

        Span<byte> word = stackalloc byte[4];
        foreach (int value in (int[])[pipeline.Tokenizer.VocabularySize, pipeline.Tokenizer.EosTokenId, pipeline.LlmMaxLength, .. pipeline.Tokenizer.Encode(TokenizerProbe)])
        {
            BinaryPrimitives.WriteInt32LittleEndian(word, value);
            sha.AppendData(word);
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

    private static void AppendModule(IncrementalHash sha, string prefix, nn.Module? module)
    {
        if (module is null)
        {
            sha.AppendData(Encoding.UTF8.GetBytes(prefix + "none\n"));
            return;
        }

        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Span<byte> word = stackalloc byte[8];
        foreach (var (name, tensor) in module.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => (kv.Key, kv.Value)))
        {
            sha.AppendData(Encoding.UTF8.GetBytes($"{prefix}{name}:{tensor.dtype}:[{string.Join(",", tensor.shape)}]\n"));
            long count = tensor.numel();
            if (count == 0)
            {
                continue;
            }

            var positions = Enumerable.Range(0, SamplesPerTensor).Select(i => i * (count - 1) / (SamplesPerTensor - 1)).Distinct().ToArray();
            using var index = torch.tensor(positions, device: tensor.device);
            using var sample = tensor.reshape(-1).index_select(0, index).to(ScalarType.Float32).cpu().contiguous();
            sha.AppendData(sample.bytes);
            BinaryPrimitives.WriteInt64LittleEndian(word, count);
            sha.AppendData(word);
        }
    }
}
