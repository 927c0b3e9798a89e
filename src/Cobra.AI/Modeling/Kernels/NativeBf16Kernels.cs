using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// The bf16 kernels of <c>libcobra_kernels.so</c>, small C kernels over the AVX512-BF16 dot-product instruction,
/// which .NET 10 does not expose (<c>native/cobra_kernels.c</c>): <see cref="Linear"/>, y = x Wᵀ (+ b) for every
/// bf16 linear on the CPU (decode steps, the batch with a prefill chunk riding in it, prefill, the towers; see
/// <see cref="MaxRows"/>), <see cref="Attention"/>, the vision towers' self-attention with
/// the flash kernels' cast points, and <see cref="Scan16"/>, <see cref="SelectiveScanCpu"/>'s kernel compiled by GCC
/// (the same operations, with the states in registers).
/// <para>
/// Why: a decode step is a few to a few dozen rows. libtorch's bf16 GEMM repacks the weights on every call and
/// runs at ~45 % of the bf16 peak at 16 rows; the managed GEMV widens bf16 to float32 FMAs (half the rate) and
/// only pays at 1-4 rows. The kernel reads nn.Linear's own [N, K] layout (no repack, no second copy of the
/// weights) and prefetches the next weight tile while it computes, so memory and compute overlap. Measured on a
/// 2-core EPYC (Zen 4), ms per call native / libtorch: in_proj (2560 -> 10240) 1 row 0.7 / 3.1, 4 rows 1.4 / 2.4,
/// 16 rows 2.5 / 4.3, 64 rows 8.8 / 10.6; the LM head 16 rows 11.3 / 21.1. Prompt-sized inputs (prefill, the
/// towers' 729 patches, the projector) go by rows to the threads and in row blocks whose inputs fit in half of L2:
/// one thread 86-94 % of a core's bf16 peak (C harness), about libtorch's rate on two threads.
/// </para>
/// <para>
/// <see cref="Attention"/> exists because libtorch's CPU SDPA runs the towers' shapes at ~125 GFLOP/s (a third of
/// its GEMMs): the kernel keeps a whole row of scores (a few hundred patches), takes both products with the
/// dot-product instruction over per-head packed keys and values, and runs at ~2.3x SDPA's speed.
/// </para>
/// <para>
/// Every output is summed the same way whatever the row count, tile or thread (see the C source), so a
/// request's logits do not depend on its decode batch. Used only on Linux x64 with
/// AVX512-BF16 (CPUID) and when the library loads; <see cref="EnvironmentVariable"/>=0 turns it off (the managed
/// GEMV and libtorch then run, as on every other CPU). The library has no dependencies and no state: loading
/// it has no side effect on the process.
/// </para>
/// </summary>
internal static unsafe class NativeBf16Kernels
{
    /// <summary>Set to <c>0</c> (or <c>false</c>/<c>off</c>) to keep the native kernels unloaded.</summary>
    public const string EnvironmentVariable = "COBRA_NATIVE_KERNELS";

    /// <summary>
    /// Rows up to which the threads split the output columns (past it, the rows). The kernel takes every row count
    /// and every width, so a row's sums never depend on how many rows share its call: a decode batch with a prefill
    /// chunk of any size beside it, prefill, the towers and the projector all run here. (Handing narrow weights to
    /// libtorch past this many rows, as before, had capped a combined step at 128 rows to keep decode rows' results
    /// batch-independent, and with it how much prefill could ride beside a large batch; dt_proj, K = 160, is the
    /// one weight where libtorch is faster at 256 rows: 300 vs 400 GFLOP/s, about 0.5 % of a prefill.) GFLOP/s
    /// native / libtorch, 2 Zen 4 cores, the same process, three rounds on a noisy VM: in_proj 256 rows 325-429 /
    /// 378-416, out_proj 256 rows 333-425 / 367-420, DINOv2 fc1 729 rows 246-365 / 291-345.
    /// </summary>
    public const int MaxRows = 128;

    /// <summary>The library's file name.</summary>
    public const string LibraryName = "libcobra_kernels.so";

    /// <summary>Below this much work (weight bytes x row blocks) one thread is faster than waking another.</summary>
    private const long ParallelThresholdBytes = 1 << 20;

    /// <summary>Weight rows per register tile (the C kernel's NR): threads split the output columns in whole tiles.</summary>
    private const int TileColumns = 6;

    private static readonly Lazy<Library?> Loaded = new(() => Load(Environment.GetEnvironmentVariable(EnvironmentVariable)));

    /// <summary>True when the kernel runs here (the CPU has AVX512-BF16, the library loaded, not switched off).</summary>
    public static bool IsAvailable => Loaded.Value is not null;

    /// <summary>Why the kernel is not available (null when it is): for the bench and the logs.</summary>
    public static string? UnavailableReason => Loaded.Value is null ? Reason(Environment.GetEnvironmentVariable(EnvironmentVariable)) : null;


    /// <summary>The loaded library, or an exception that says why there is none.</summary>
    private static Library Required => Loaded.Value ?? throw new InvalidOperationException($"{LibraryName} is not available: {UnavailableReason}");

    /// <summary>True when <see cref="Linear"/> handles this input, weight and bias.</summary>
    public static bool Supports(Tensor input, Tensor weight, Tensor? bias = null) =>
        weight.dtype == ScalarType.BFloat16 && input.dtype == ScalarType.BFloat16
        && weight.device_type == DeviceType.CPU && input.device_type == DeviceType.CPU
        && weight.dim() == 2 && weight.is_contiguous()
        && input.dim() >= 1 && input.shape[^1] == weight.shape[1] && input.NumberOfElements > 0
        && (bias is null || IsBf16Vector(bias, weight.shape[0]))
        && IsAvailable;

    /// <summary>True when <see cref="Linear"/> also applies <paramref name="epilogue"/> (bf16 [N] gamma, bf16 residual shaped like the output).</summary>
    public static bool Supports(Tensor input, Tensor weight, Tensor? bias, in LinearEpilogue epilogue) =>
        Supports(input, weight, bias)
        && (epilogue.Gamma is null || IsBf16Vector(epilogue.Gamma, weight.shape[0]))
        && (epilogue.Residual is not { } residual || (residual.device_type == DeviceType.CPU && residual.dtype == ScalarType.BFloat16
            && residual.shape.SequenceEqual([.. input.shape[..^1], weight.shape[0]])));

    /// <summary>
    /// x [..., K] · W [N, K]ᵀ (+ b [N]) -> [..., N] in bf16 (float32 sums, one rounding), then <paramref name="epilogue"/>'s
    /// steps, each rounded as the separate bf16 op it replaces. Check <see cref="Supports(Tensor, Tensor, Tensor?, in LinearEpilogue)"/> first.
    /// </summary>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias, in LinearEpilogue epilogue = default)
    {
        var library = Required;
        long n = weight.shape[0], k = weight.shape[1];
        long rows = input.NumberOfElements / k;
        using var source = InputRows(input, k, rows);                            // [rows, ldx >= K]
        long ldx = source.shape[1];
        using var biasData = bias?.contiguous();                                 // [N]
        using var gammaData = epilogue.Gamma?.contiguous();                      // [N]
        using var residualData = epilogue.Residual?.contiguous();                // [..., N]
        var output = torch.empty([.. input.shape[..^1], n], ScalarType.BFloat16, torch.CPU); // [..., N]
        nint x = TensorMemory.Address(source), w = TensorMemory.Address(weight), y = TensorMemory.Address(output);
        nint b = biasData is null ? 0 : TensorMemory.Address(biasData);
        nint g = gammaData is null ? 0 : TensorMemory.Address(gammaData);
        nint r = residualData is null ? 0 : TensorMemory.Address(residualData);
        var linear = library.Linear;
        long work = weight.NumberOfElements * sizeof(ushort) * ((rows + 3) / 4);
        if (rows > MaxRows)
        {
            // Prompt-sized: compute-bound, so each thread takes whole rows (tiles of four) and every column; each
            // streams the weights once per row block, and no two threads share a row block (split by columns,
            // both threads kept every input row block in their L2s: 5-10 % slower at 256-729 rows).
            KernelWorkers.Split(rows, 4, (from, to) => linear(RowAt(x, from, ldx), ldx, w, k, b, RowAt(y, from, n), n, to - from, 0, n, g, RowAt(r, from, n), n));
        }
        else
        {
            KernelWorkers.Split(n, TileColumns, (from, to) => linear(x, ldx, w, k, b, y, n, rows, from, to, g, r, n), parallel: work >= ParallelThresholdBytes);
        }

        return output;
    }

    /// <summary>
    /// The input as a [rows, ldx] matrix. Prompt-sized inputs whose rows are a multiple of 4 KB apart (K a multiple of
    /// 2048: DINOv2's fc2, K = 4096) are copied with 32 more values a row: at such a stride a tile's four input rows
    /// and six weight rows all fall in one L1 set (8 ways), so the loads of every step evicted each other (fc2 at 729
    /// rows, one thread: 74 % of the peak unpadded, 83-94 % padded; the copy costs ~3 % of the GEMM).
    /// </summary>
    private static Tensor InputRows(Tensor input, long k, long rows)
    {
        if (rows <= MaxRows || k % 2048 != 0)
        {
            using var whole = input.contiguous();                               // [..., K]
            return whole.view(rows, k);
        }

        var padded = torch.empty([rows, k + 32], ScalarType.BFloat16, torch.CPU); // [rows, K + 32]
        using var values = padded.narrow(1, 0, k);                              // [rows, K]
        using var flat = input.reshape(rows, k);                                // [rows, K]
        values.copy_(flat);
        return padded;
    }

    /// <summary>The address of row <paramref name="row"/> of a bf16 matrix <paramref name="width"/> wide at <paramref name="data"/> (0 stays 0: an absent operand).</summary>
    private static nint RowAt(nint data, long row, long width) => data == 0 ? 0 : data + (nint)(row * width * sizeof(ushort));

    /// <summary>A bf16 CPU vector of <paramref name="length"/> values (a bias or a LayerScale gamma).</summary>
    private static bool IsBf16Vector(Tensor t, long length) =>
        t.device_type == DeviceType.CPU && t.dtype == ScalarType.BFloat16 && t.dim() == 1 && t.shape[0] == length;

    /// <summary>True when <see cref="Attention"/> handles this qkv projection output [B, N, 3·D] for <paramref name="heads"/> heads.</summary>
    public static bool SupportsAttention(Tensor qkv, int heads) =>
        qkv.dtype == ScalarType.BFloat16 && qkv.device_type == DeviceType.CPU && qkv.dim() == 3
        && qkv.shape[1] > 0 && heads > 0 && qkv.shape[2] % (3L * heads) == 0 && qkv.shape[2] > 0
        && IsAvailable;

    /// <summary>
    /// softmax(q kᵀ / √hd) v per head from a qkv projection's output [B, N, 3·D] (rows [q | k | v], heads contiguous
    /// within each, as timm's <c>Attention</c> lays them out) to [B, N, D] in bf16, heads side by side (the input of
    /// the output projection, so no transpose is needed). Cast points of the flash kernels under bf16: float32
    /// scores times the scale, float32 row max, unnormalised exponentials rounded to bf16 for the value product,
    /// float32 row sum and accumulation, one division, one rounding. The (batch, head) pairs are split over the
    /// kernel workers, each with its own workspace. Check <see cref="SupportsAttention"/> first.
    /// </summary>
    public static Tensor Attention(Tensor qkv, int heads)
    {
        var library = Required;
        long batch = qkv.shape[0], n = qkv.shape[1], d = qkv.shape[2] / 3, hd = d / heads;
        using var source = qkv.contiguous();                                     // [B,N,3D]
        var output = torch.empty([batch, n, d], ScalarType.BFloat16, torch.CPU);  // [B,N,D]
        long workspaceBytes = library.AttentionWorkspace(n, hd);
        int items = (int)(batch * heads), parts = Math.Min(KernelWorkers.Parallelism, items);
        using var workspace = torch.empty([parts, workspaceBytes], ScalarType.Byte, torch.CPU); // one per part
        nint x = TensorMemory.Address(source), y = TensorMemory.Address(output), w = TensorMemory.Address(workspace);
        float scale = (float)(1.0 / Math.Sqrt(hd));
        var attention = library.Attention;
        void Heads(int part, int count)
        {
            for (int item = items * part / count; item < items * (part + 1) / count; item++)
            {
                long b = item / heads, h = item % heads;
                nint q = x + (nint)((((b * n * 3 * d) + (h * hd)) * sizeof(ushort)));
                nint o = y + (nint)((((b * n * d) + (h * hd)) * sizeof(ushort)));
                attention(q, q + (nint)(d * sizeof(ushort)), q + (nint)(2 * d * sizeof(ushort)), 3 * d, o, d, n, hd, scale, w + (nint)(part * workspaceBytes));
            }
        }

        if (parts == 1)
        {
            Heads(0, 1);
        }
        else
        {
            KernelWorkers.Run((part, _) =>
            {
                if (part < parts)
                {
                    Heads(part, parts);
                }
            });
        }

        return output;
    }

    /// <summary>
    /// The bf16 peak probe: <paramref name="iterations"/> x 12 independent dot-product instructions on registers
    /// (64 FLOPs each) on the calling thread; returns a value that depends on all of them.
    /// </summary>
    public static float PeakProbe(long iterations)
    {
        return Required.Peak(iterations);
    }

    /// <summary>
    /// The selective scan of channels [<paramref name="d0"/>, <paramref name="d1"/>) (whole blocks of 16) of one
    /// sequence with d_state 16: <see cref="SelectiveScanCpu"/>'s arithmetic, operation for operation (the same
    /// results bit for bit), with the block's 16 states in registers. Pointers as <see cref="SelectiveScanCpu"/>
    /// lays its operands out for sequence b: u, Δ and the output [L, D], z rows <paramref name="zStride"/> apart, B
    /// and C [L, 16], A [D, 16], the state [D, 16] (updated in place), D and Δ's bias [D]. Check <see cref="IsAvailable"/> first.
    /// </summary>
    internal static void Scan16(nint u, nint delta, nint z, long zStride, nint b, nint c, nint a, nint dSkip, nint deltaBias, nint state, nint output,
                                long length, long channels, long d0, long d1, bool bf16) =>
        Required.Scan16(u, delta, z, zStride, b, c, a, dSkip, deltaBias, state, output, length, channels, d0, d1, bf16 ? 1 : 0);

    /// <summary>FLOPs one <see cref="PeakProbe"/> iteration does.</summary>
    public const int PeakProbeFlopsPerIteration = 12 * 64;

    /// <summary>The CPU supports the kernel: x86-64 with AVX-512 F/BW enabled by the OS and AVX512-BF16 (CPUID leaf 7, sub-leaf 1, EAX bit 5).</summary>
    public static bool CpuSupported() =>
        RuntimeInformation.ProcessArchitecture == Architecture.X64 && Avx512F.IsSupported && Avx512BW.IsSupported
        && (X86Base.CpuId(7, 0).Eax >= 1) && (X86Base.CpuId(7, 1).Eax & (1 << 5)) != 0;

    private static string Reason(string? environmentValue)
    {
        if (!ManagedKernels.Resolve(true, environmentValue, EnvironmentVariable))
        {
            return $"{EnvironmentVariable}={environmentValue}";
        }

        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return $"built for linux-x64 only (this is {RuntimeInformation.RuntimeIdentifier})";
        }

        return !CpuSupported() ? "the CPU has no AVX512-BF16" : $"{LibraryName} was not found or did not load (looked in {string.Join(", ", Candidates())})";
    }

    private static Library? Load(string? environmentValue)
    {
        if (!ManagedKernels.Resolve(true, environmentValue, EnvironmentVariable) || !OperatingSystem.IsLinux() || !CpuSupported())
        {
            return null;
        }

        foreach (string path in Candidates())
        {
            if (File.Exists(path) && NativeLibrary.TryLoad(path, out nint handle))
            {
                return new Library(
                    (delegate* unmanaged<nint, long, nint, long, nint, nint, long, long, long, long, nint, nint, long, void>)NativeLibrary.GetExport(handle, "cobra_bf16_linear"),
                    (delegate* unmanaged<nint, nint, nint, long, nint, long, long, long, float, nint, void>)NativeLibrary.GetExport(handle, "cobra_bf16_attention"),
                    (delegate* unmanaged<long, long, long>)NativeLibrary.GetExport(handle, "cobra_bf16_attention_workspace"),
                    (delegate* unmanaged<long, float>)NativeLibrary.GetExport(handle, "cobra_bf16_peak"),
                    (delegate* unmanaged<nint, nint, nint, long, nint, nint, nint, nint, nint, nint, nint, long, long, long, long, int, void>)NativeLibrary.GetExport(handle, "cobra_selective_scan16"));
            }
        }

        return null;
    }

    /// <summary>Where the library can be: beside the assembly or the app (project references), or under runtimes/linux-x64/native (packages).</summary>
    private static IEnumerable<string> Candidates()
    {
        string? assemblyDirectory = Path.GetDirectoryName(typeof(NativeBf16Kernels).Assembly.Location);
        foreach (string? directory in new[] { assemblyDirectory, AppContext.BaseDirectory }.Distinct())
        {
            if (!string.IsNullOrEmpty(directory))
            {
                yield return Path.Combine(directory, LibraryName);
                yield return Path.Combine(directory, "runtimes", "linux-x64", "native", LibraryName);
            }
        }
    }

    /// <summary>The exports.</summary>
    private sealed class Library(
        delegate* unmanaged<nint, long, nint, long, nint, nint, long, long, long, long, nint, nint, long, void> linear,
        delegate* unmanaged<nint, nint, nint, long, nint, long, long, long, float, nint, void> attention,
        delegate* unmanaged<long, long, long> attentionWorkspace,
        delegate* unmanaged<long, float> peak,
        delegate* unmanaged<nint, nint, nint, long, nint, nint, nint, nint, nint, nint, nint, long, long, long, long, int, void> scan16)
    {
        public delegate* unmanaged<nint, long, nint, long, nint, nint, long, long, long, long, nint, nint, long, void> Linear { get; } = linear;

        public delegate* unmanaged<nint, nint, nint, long, nint, long, long, long, float, nint, void> Attention { get; } = attention;

        public delegate* unmanaged<long, long, long> AttentionWorkspace { get; } = attentionWorkspace;

        public delegate* unmanaged<long, float> Peak { get; } = peak;

        public delegate* unmanaged<nint, nint, nint, long, nint, nint, nint, nint, nint, nint, nint, long, long, long, long, int, void> Scan16 { get; } = scan16;
    }
}
