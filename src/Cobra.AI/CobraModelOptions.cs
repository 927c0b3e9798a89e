namespace Cobra.AI;

/// <summary>What to do with system messages and <c>ChatOptions.Instructions</c>, which Cobra's prompt format has no place for.</summary>
public enum SystemPromptPolicy
{
    /// <summary>Prepend the system text to the first user message (the default: nothing is lost).</summary>
    PrependToFirstUserMessage,

    /// <summary>Drop it, as upstream Cobra does, and log a warning.</summary>
    Ignore,

    /// <summary>Throw <see cref="ArgumentException"/> when a request carries system text.</summary>
    Reject,
}

/// <summary>What to do when a conversation carries more than one image (Cobra was trained on one per conversation).</summary>
public enum MultipleImagePolicy
{
    /// <summary>Use the most recent image and log a warning about the others (the default).</summary>
    UseLatest,

    /// <summary>Throw <see cref="ArgumentException"/>.</summary>
    Reject,
}

/// <summary>
/// How to load and run a Cobra model. Options objects are read, never modified, by this library; loading
/// validates them and reports the first problem by option name.
/// </summary>
public sealed class CobraModelOptions
{
    /// <summary>
    /// A hub-mirror folder laid out as <c>&lt;org&gt;/&lt;repo&gt;/&lt;file&gt;</c> holding the model files; null looks
    /// in the Hugging Face cache (<see cref="CacheDirectory"/>) instead.
    /// </summary>
    public string? ModelPath { get; set; }

    /// <summary>Cobra model id (default <c>cobra+3b</c>).</summary>
    public string ModelId { get; set; } = "cobra+3b";

    /// <summary>Hugging Face cache root; null uses <c>HF_HUB_CACHE</c> / <c>HF_HOME</c>.</summary>
    public string? CacheDirectory { get; set; }

    /// <summary>
    /// With no <see cref="ModelPath"/>, fetch missing files from the Hugging Face Hub into the cache at load
    /// (endpoint <c>HF_ENDPOINT</c>, token <c>HF_TOKEN</c>; <c>HF_HUB_OFFLINE=1</c> forbids it).
    /// </summary>
    public bool AllowDownload { get; set; }

    /// <summary><c>auto</c> (CUDA when available), <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; set; } = "auto";

    /// <summary><c>fp32</c>, <c>bf16</c>, <c>fp16</c>, or null for the device default (fp32 on CPU, bf16 on CUDA).</summary>
    public string? Precision { get; set; }

    /// <summary>
    /// Run CPU tensors through the managed SIMD kernels (decode GEMV, fused selective scan); default true.
    /// False runs the device-generic torch-op path that CUDA takes (libtorch linear, chunked scan) on the
    /// CPU as well. The environment variable <c>COBRA_MANAGED_KERNELS=0</c> also turns them off.
    /// </summary>
    public bool UseManagedCpuKernels { get; set; } = true;

    /// <summary>
    /// Threads for CPU compute: libtorch's intra-op pool and the managed kernels' workers. Null (the default)
    /// leaves both at one per core. Process-wide, like libtorch's own setting: the last model loaded with a
    /// value decides.
    /// </summary>
    public int? CpuThreads { get; set; }

    /// <summary>
    /// Before libtorch loads, set <c>THP_MEM_ALLOC_ENABLE=1</c> (huge pages for CPU tensors) and
    /// <c>OMP_WAIT_POLICY=PASSIVE</c> (OpenMP workers sleep between ops instead of spinning on the cores the
    /// managed kernels use), each unless already set; default true. Process-wide: native libraries read their
    /// environment once, so only the first model loaded in a process (or the first TorchSharp use) decides.
    /// </summary>
    public bool TuneNativeRuntime { get; set; } = true;

    /// <summary>Requests decoded together in one batch; more wait in the queue.</summary>
    public int MaxConcurrentRequests { get; set; } = 4;

    /// <summary>Requests allowed to wait for one of the <see cref="MaxConcurrentRequests"/> slots; one more is refused with <see cref="CobraQueueFullException"/>.</summary>
    public int MaxQueuedRequests { get; set; } = 64;

    /// <summary>
    /// State snapshots kept for reuse (0 disables reuse): at the end of each turn, and after an image plus the
    /// prompt prefix every first turn shares, so the next turn, or a new conversation about a seen image, skips that part.
    /// </summary>
    public int ConversationCacheSize { get; set; } = 16;

    /// <summary>Bytes of state snapshots kept (a snapshot of the 2.8B model is 64 × 5120 × 20 values: 26 MB in fp32).</summary>
    public long ConversationCacheBytes { get; set; } = 1L << 30;

    /// <summary>
    /// Conversations remembered for <c>ChatOptions.ConversationId</c> (every response carries an id; a later call
    /// with it and only the new messages continues the conversation). The least recently used is forgotten first.
    /// </summary>
    public int MaxConversations { get; set; } = 1024;

    /// <summary>Bytes of remembered conversations (messages, images by encoded size).</summary>
    public long MaxConversationBytes { get; set; } = 256L << 20;

    /// <summary>
    /// Largest prompt accepted, in characters over all turns (system text included), checked before tokenising so a
    /// huge body cannot tie up a thread; prompts within it are cut to the model's <c>llm_max_length</c> tokens as upstream does.
    /// </summary>
    public int MaxPromptCharacters { get; set; } = 1_000_000;

    /// <summary>Most completions one request may ask for (<see cref="CobraAdditionalProperties.ChoiceCount"/>).</summary>
    public int MaxChoices { get; set; } = 8;

    /// <summary>Most positions one prefill chunk feeds per request; the engine decodes running streams between chunks.</summary>
    public int PrefillChunkTokens { get; set; } = 256;

    /// <summary>Largest encoded image accepted, in bytes (data, file or download); over it, <see cref="CobraImageLimitException"/>.</summary>
    public long MaxImageBytes { get; set; } = 20L * 1024 * 1024;

    /// <summary>
    /// Largest image accepted, in pixels (width × height), checked from the header before decoding; over it,
    /// <see cref="CobraImageLimitException"/>. The default, 25 MP, admits 24 MP camera photos (6000×4000) and
    /// every phone's default mode; the model sees 384×384 whatever it is given.
    /// </summary>
    public long MaxImagePixels { get; set; } = Imaging.ImageLimits.DefaultMaxPixels;

    /// <summary>Images decoded at the same time by one client; more wait (decoding is CPU- and memory-heavy).</summary>
    public int MaxConcurrentImageDecodes { get; set; } = 2;

    /// <summary>
    /// Estimated memory (encoded bytes, decoder buffer and RGB result) of the images being decoded at the same
    /// time by one client, in bytes; more wait, and one image that alone needs more is refused with
    /// <see cref="CobraImageLimitException"/>. The default, 640 MiB, lets two images of <see cref="MaxImagePixels"/> decode together.
    /// </summary>
    public long MaxImageBytesInFlight { get; set; } = 640L * 1024 * 1024;

    /// <summary>Folders from which <c>file:</c> image URIs may be read; empty means none.</summary>
    public IList<string> AllowedImageRoots { get; set; } = [];

    /// <summary>
    /// Allow <c>http(s):</c> image URIs to be fetched. Only public internet addresses are connected to (checked on
    /// the address dialled, redirects included); loopback, private, link-local, multicast and similar are refused.
    /// </summary>
    public bool AllowRemoteImages { get; set; }

    /// <summary>
    /// With <see cref="AllowRemoteImages"/>, the host names that may be fetched (<c>images.example.com</c>, or
    /// <c>*.example.com</c> for its subdomains), checked on every redirect too; empty allows any public host.
    /// </summary>
    public IList<string> RemoteImageHosts { get; set; } = [];

    /// <summary>Time limit for fetching a remote image.</summary>
    public TimeSpan RemoteImageTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Handling of system messages and instructions.</summary>
    public SystemPromptPolicy SystemPrompts { get; set; } = SystemPromptPolicy.PrependToFirstUserMessage;

    /// <summary>Handling of conversations with several images.</summary>
    public MultipleImagePolicy MultipleImages { get; set; } = MultipleImagePolicy.UseLatest;

    /// <summary>
    /// A conversation state store shared by replicas, as the second level behind the in-process cache:
    /// <c>redis://HOST:PORT</c> (optionally <c>redis://[user]:password@HOST:PORT/DB</c>, <c>rediss://</c> for TLS).
    /// Null (the default) keeps states in-process only. A store that is down or slow only means recomputing.
    /// </summary>
    public string? StateStore { get; set; }

    /// <summary>How long a conversation state snapshot lives in the <see cref="StateStore"/>.</summary>
    public TimeSpan StateStoreTimeToLive { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Snapshots larger than this are neither written to nor read from the <see cref="StateStore"/> (cobra+3b: 26 MB, the fp32 state).</summary>
    public long StateStoreMaxSnapshotBytes { get; set; } = 64L * 1024 * 1024;

    /// <summary>Time limit of one <see cref="StateStore"/> operation (a lookup, a write); past it the request recomputes.</summary>
    public TimeSpan StateStoreTimeout { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>A copy, so later changes by the caller do not reach a loaded client.</summary>
    internal CobraModelOptions Snapshot() => new()
    {
        ModelPath = ModelPath, ModelId = ModelId, CacheDirectory = CacheDirectory, AllowDownload = AllowDownload,
        Device = Device, Precision = Precision, UseManagedCpuKernels = UseManagedCpuKernels, CpuThreads = CpuThreads, TuneNativeRuntime = TuneNativeRuntime, MaxConcurrentRequests = MaxConcurrentRequests,
        ConversationCacheSize = ConversationCacheSize, ConversationCacheBytes = ConversationCacheBytes, MaxQueuedRequests = MaxQueuedRequests,
        MaxConversations = MaxConversations, MaxConversationBytes = MaxConversationBytes, MaxChoices = MaxChoices, PrefillChunkTokens = PrefillChunkTokens, MaxPromptCharacters = MaxPromptCharacters,
        MaxImageBytes = MaxImageBytes, MaxImagePixels = MaxImagePixels,
        MaxConcurrentImageDecodes = MaxConcurrentImageDecodes, MaxImageBytesInFlight = MaxImageBytesInFlight,
        AllowedImageRoots = [.. AllowedImageRoots], AllowRemoteImages = AllowRemoteImages, RemoteImageHosts = [.. RemoteImageHosts], RemoteImageTimeout = RemoteImageTimeout,
        SystemPrompts = SystemPrompts, MultipleImages = MultipleImages,
        StateStore = StateStore, StateStoreTimeToLive = StateStoreTimeToLive, StateStoreMaxSnapshotBytes = StateStoreMaxSnapshotBytes, StateStoreTimeout = StateStoreTimeout,
    };

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option.</summary>
    internal void Validate()
    {
        static void Require(bool ok, string name, string problem)
        {
            if (!ok)
            {
                throw new ArgumentException($"CobraModelOptions.{name} {problem}", name);
            }
        }

        Require(ModelPath is null || !string.IsNullOrWhiteSpace(ModelPath), nameof(ModelPath), "must be null (use the Hugging Face cache) or a folder path.");
        Require(!(AllowDownload && ModelPath is not null), nameof(AllowDownload), "applies to the Hugging Face cache only: leave ModelPath null to download into CacheDirectory.");
        Require(!string.IsNullOrWhiteSpace(ModelId), nameof(ModelId), "must not be empty.");
        Require(CpuThreads is null or >= 1 and <= 4096, nameof(CpuThreads), $"must be null (one per core) or in [1, 4096], not {CpuThreads}.");
        Require(ModelId.Length is > 0 and <= 96 && ModelId.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '+' or '-') && !ModelId.Contains("..", StringComparison.Ordinal) && char.IsAsciiLetterOrDigit(ModelId[0]),
            nameof(ModelId), $"'{ModelId}' is not a model id: one name of letters, digits and . _ + - (like cobra+3b).");
        Require(MaxConcurrentRequests is >= 1 and <= 256, nameof(MaxConcurrentRequests), $"must be in [1, 256], not {MaxConcurrentRequests}.");
        Require(ConversationCacheSize is >= 0 and <= 4096, nameof(ConversationCacheSize), $"must be in [0, 4096], not {ConversationCacheSize}.");
        Require(MaxQueuedRequests is >= 0 and <= 100_000, nameof(MaxQueuedRequests), $"must be in [0, 100000], not {MaxQueuedRequests}.");
        Require(ConversationCacheBytes >= 0, nameof(ConversationCacheBytes), $"must not be negative, not {ConversationCacheBytes}.");
        Require(MaxConversations >= 0, nameof(MaxConversations), $"must not be negative, not {MaxConversations}.");
        Require(MaxConversationBytes >= 0, nameof(MaxConversationBytes), $"must not be negative, not {MaxConversationBytes}.");
        Require(MaxPromptCharacters > 0, nameof(MaxPromptCharacters), $"must be positive, not {MaxPromptCharacters}.");
        Require(MaxChoices is >= 1 and <= 128, nameof(MaxChoices), $"must be in [1, 128], not {MaxChoices}.");
        Require(PrefillChunkTokens is >= 1 and <= 65536, nameof(PrefillChunkTokens), $"must be in [1, 65536], not {PrefillChunkTokens}.");
        Require(MaxImageBytes > 0, nameof(MaxImageBytes), $"must be positive, not {MaxImageBytes}.");
        Require(MaxImagePixels > 0, nameof(MaxImagePixels), $"must be positive, not {MaxImagePixels}.");
        Require(MaxConcurrentImageDecodes is >= 1 and <= 64, nameof(MaxConcurrentImageDecodes), $"must be in [1, 64], not {MaxConcurrentImageDecodes}.");
        Require(MaxImageBytesInFlight > 0, nameof(MaxImageBytesInFlight), $"must be positive, not {MaxImageBytesInFlight}.");
        Require(RemoteImageHosts.All(h => !string.IsNullOrWhiteSpace(h)), nameof(RemoteImageHosts), "must not contain empty host names.");
        Require(RemoteImageTimeout > TimeSpan.Zero, nameof(RemoteImageTimeout), "must be positive.");
        Require(AllowedImageRoots.All(r => !string.IsNullOrWhiteSpace(r)), nameof(AllowedImageRoots), "must not contain empty paths.");
        Require(StateStoreTimeToLive > TimeSpan.Zero, nameof(StateStoreTimeToLive), "must be positive.");
        Require(StateStoreMaxSnapshotBytes > 0, nameof(StateStoreMaxSnapshotBytes), $"must be positive, not {StateStoreMaxSnapshotBytes}.");
        Require(StateStoreTimeout > TimeSpan.Zero && StateStoreTimeout <= TimeSpan.FromMinutes(1), nameof(StateStoreTimeout), "must be positive and at most one minute.");
        if (StateStore is not null)
        {
            _ = Generation.StateStore.StateStoreFactory.ToRedisConfiguration(StateStore, StateStoreTimeout);   // throws naming the option
        }
    }
}

/// <summary>Loading progress, reported through <see cref="IProgress{T}"/>.</summary>
/// <param name="Stage">What is being done.</param>
/// <param name="Step">1-based step number.</param>
/// <param name="Steps">Number of steps.</param>
public sealed record CobraLoadProgress(string Stage, int Step, int Steps);
