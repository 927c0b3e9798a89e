using Cobra.AI.Generation.Constrained;
using System.Diagnostics;
using System.Threading.Channels;
using Cobra.AI.Generation.StateStore;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Text;
using Microsoft.Extensions.Logging;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation;

/// <summary>How an <see cref="InferenceEngine"/> schedules work.</summary>
internal sealed record EngineSettings
{
    /// <summary>Requests admitted at once (prefilling or decoding); more wait in the queue.</summary>
    public int MaxActive { get; init; } = 4;

    /// <summary>Requests allowed to wait; one more is refused with <see cref="CobraQueueFullException"/>.</summary>
    public int MaxQueued { get; init; } = 64;

    /// <summary>Most positions one prefill chunk feeds per row (the unit between two looks at the other work).</summary>
    public int PrefillChunkTokens { get; init; } = 256;

    /// <summary>Prefills of several requests run as one batch when their next chunks have the same length (at most this many rows).</summary>
    public int MaxPrefillBatch { get; init; } = 8;

    /// <summary>Snapshots kept by the state cache (0 disables it).</summary>
    public int CacheEntries { get; init; } = 16;

    /// <summary>Bytes of snapshots kept by the state cache.</summary>
    public long CacheBytes { get; init; } = 2L << 30;

    /// <summary>
    /// While streams decode, the pending work of one iteration (the chunk positions beside the step, or tower units)
    /// is held to this multiple of a decode step (at least one unit of work; the chunk's box grows with the prompts
    /// waiting, see <see cref="StreamingChunkPlan"/>), so a running stream's gap between tokens stays near (1 + this) steps. 0.6, measured
    /// with the full 64 layers, 4 clients, every 4th with a new image: inter-token p99 2.6x the single-stream step
    /// (two runs; 3.3x at 1.0), while 16 text clients at 8 layers kept 6.9x one client's tokens/s. At 8 layers the
    /// tail is one tower unit (40-80 ms, longer than such a box) whatever this is.
    /// </summary>
    public double PendingWorkPerStep { get; init; } = 0.6;
}

/// <summary>
/// Owns one loaded model and the only thread that touches its tensors: THE generation path of the CLI, the
/// chat client, the server and the benches. Requests wait in a bounded FIFO queue; up to
/// <see cref="EngineSettings.MaxActive"/> are admitted. Every iteration of the loop (vLLM-style continuous
/// batching):
/// 1. frees cancelled requests (queued ones are freed at once, from the cancelling thread);
/// 2. admits queued requests: the longest cached prefix (conversation turn, or image + shared prompt prefix)
///    replaces that part of the prefill;
/// 3. runs one batched decode step for every decoding row (their states stay stacked across steps; rows are
///    appended and selected out as requests join and leave) and samples every row in one pass; on prefill's turn
///    the next prefill chunk (batched across requests whose chunks have one length) rides in the same pass, sharing
///    its weight reads (vLLM's chunked prefill beside decode);
/// 4. on the towers' turn, runs a time-boxed slice of vision-tower units, so a new image prompt never freezes
///    running streams. Prefill and towers take turns while both wait.
/// A finished prefill forks its state into n rows (n completions share it). Each unit of work runs in its own
/// dispose scope under no-grad; nothing tensor-related crosses a thread or an <c>await</c>. Text leaves
/// through a per-request channel.
/// </summary>
internal sealed partial class InferenceEngine : IDisposable
{
    /// <summary>Tower work per iteration while nothing decodes: short enough that admission and cancellation are checked often.</summary>
    private const double IdleVisionSliceMs = 250;

    private readonly CobraPipeline pipeline;
    private readonly EngineSettings settings;
    private readonly ILogger logger;
    private readonly Thread thread;
    private readonly ConversationStateCache cache;
    private readonly DistributedStateStore? stateStore;                         // [state-store] second level, owned
    private readonly LinkedList<Job> queue = new();                             // guarded by itself
    private readonly SemaphoreSlim wake = new(0);
    private readonly List<Job> admitted = [];                                    // FIFO: prefilling and decoding requests
    private readonly List<Choice> decoding = [];
    private readonly int sharedPromptPrefix;
    private int disposed;
    private long liveTensors;
    private long requests;
    private long promptTokens;
    private long cachedPromptTokens;
    private long generatedTokens;
    private long decodeSteps;
    private long decodeRowsStepped;                                              // rows summed over the decode steps
    private long busyTicks;                                                      // Stopwatch ticks outside the idle wait
    private int activeCount;
    private int decodingRows;

    // Decoding rows share one block of states: a joiner is copied in, a leaver swapped with the last row (DecodeBatch).
    private readonly DecodeBatch batch = new();
    private List<Choice> batchMembers = [];

    // Cost estimates (ms) that size the pending-work slice; exponential moving averages.
    private double decodeStepMs = double.NaN;                                    // a plain decode step of the current batch
    private int decodeStepRows;                                                  // ... measured at this many rows
    private int stepsSincePlain;
    private double chunkTokenMs = double.NaN;                                    // what one chunk position adds to a step
    private double visionUnitMs = double.NaN;
    private bool visionLeads;                                                    // which kind of pending work opens the next slice

    /// <summary>Starts the inference thread for <paramref name="pipeline"/> (owned from now on).</summary>
    public InferenceEngine(CobraPipeline pipeline, EngineSettings settings, ILogger logger, DistributedStateStore? stateStore = null)
    {
        this.pipeline = pipeline;
        this.stateStore = stateStore;
        this.settings = settings with
        {
            MaxActive = Math.Max(1, settings.MaxActive),
            MaxQueued = Math.Max(0, settings.MaxQueued),
            PrefillChunkTokens = Math.Max(1, settings.PrefillChunkTokens),
            MaxPrefillBatch = Math.Max(1, settings.MaxPrefillBatch),
        };
        this.logger = logger;
        cache = new ConversationStateCache(settings.CacheEntries, settings.CacheBytes);
        sharedPromptPrefix = ZephyrPromptBuilder.SharedFirstTurnPrefix(pipeline.Tokenizer).Count;
        thread = new Thread(Run) { IsBackground = true, Name = "cobra-inference" };
        thread.Start();
    }

    /// <summary>The model this engine runs.</summary>
    public CobraPipeline Pipeline => pipeline;

    /// <summary>The distributed second level of the conversation cache, or null (owned; the client looks up in it).</summary>
    public DistributedStateStore? StateStore => stateStore;

    /// <summary>Tensors alive on the inference thread after its last loop iteration (a leak check for tests and diagnostics).</summary>
    public long LiveTensorCount => Volatile.Read(ref liveTensors);

    /// <summary>Requests admitted right now (prefilling or decoding).</summary>
    public int ActiveCount => Volatile.Read(ref activeCount);

    /// <summary>Engine counters (any thread).</summary>
    public CobraEngineStatistics Statistics
    {
        get
        {
            int queued;
            lock (queue)
            {
                queued = queue.Count;
            }

            return new CobraEngineStatistics
            {
                QueuedRequests = queued,
                ActiveRequests = ActiveCount,
                DecodingRows = Volatile.Read(ref decodingRows),
                Requests = Interlocked.Read(ref requests),
                PromptTokens = Interlocked.Read(ref promptTokens),
                CachedPromptTokens = Interlocked.Read(ref cachedPromptTokens),
                GeneratedTokens = Interlocked.Read(ref generatedTokens),
                StateCacheEntries = cache.Count,
                StateCacheBytes = cache.Bytes,
                StateCacheHits = cache.Hits,
                StateCacheMisses = cache.Misses,
                DecodeSteps = Interlocked.Read(ref decodeSteps),
                DecodeStepRows = Interlocked.Read(ref decodeRowsStepped),
                BusyTime = Stopwatch.GetElapsedTime(0, Interlocked.Read(ref busyTicks)),
            };
        }
    }

    /// <summary>
    /// Queues a request; its events arrive on the returned reader, which completes after
    /// <see cref="GenerationCompleted"/> or with the request's exception (an <see cref="OperationCanceledException"/>
    /// when <paramref name="cancellationToken"/> fires).
    /// </summary>
    /// <exception cref="CobraQueueFullException">More than <see cref="EngineSettings.MaxQueued"/> requests wait.</exception>
    public ChannelReader<GenerationEvent> Submit(GenerationRequest request, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        ArgumentOutOfRangeException.ThrowIfZero(request.PromptIds.Count, nameof(request));
        var events = Channel.CreateUnbounded<GenerationEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var job = new Job(request, events.Writer, cancellationToken);
        lock (queue)
        {
            if (queue.Count >= settings.MaxQueued + Math.Max(0, settings.MaxActive - ActiveCount))
            {
                throw new CobraQueueFullException(queue.Count, settings.MaxQueued);
            }

            job.Node = queue.AddLast(job);
        }

        // A cancelled request that still waits is freed at once; an admitted one at the engine's next iteration.
        job.Registration = cancellationToken.Register(() =>
        {
            lock (queue)
            {
                if (job.Node?.List is not null)
                {
                    queue.Remove(job.Node);
                    job.Events.TryComplete(new OperationCanceledException(cancellationToken));
                }
            }

            wake.Release();
        });
        wake.Release();
        return events.Reader;
    }

    /// <summary>Stops accepting requests, fails queued and running ones, finishes the thread and frees the model.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        wake.Release();
        thread.Join();
        wake.Dispose();
        stateStore?.Dispose();
        pipeline.Dispose();
    }

    private void Run()
    {
        TorchRuntime.EnsureInitialized();
        using var noGrad = torch.no_grad();
        try
        {
            while (Volatile.Read(ref disposed) == 0)
            {
                Volatile.Write(ref liveTensors, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
                Volatile.Write(ref decodingRows, decoding.Count);
                if (admitted.Count == 0)
                {
                    wake.Wait();
                }

                long start = Stopwatch.GetTimestamp();
                FreeCancelled();
                Admit();
                bool visionTurn = VisionTurn();
                if (decoding.Count > 0)
                {
                    DecodeStep(withChunk: !visionTurn);
                }

                RunPendingWork(visionTurn);
                Interlocked.Add(ref busyTicks, Stopwatch.GetTimestamp() - start);
            }
        }
        finally
        {
            var gone = new ObjectDisposedException(nameof(InferenceEngine));
            foreach (var job in admitted.ToArray())
            {
                Fail(job, gone);
            }

            DropBatch();
            lock (queue)
            {
                foreach (var job in queue)
                {
                    job.Events.TryComplete(gone);
                }

                queue.Clear();
            }

            cache.Dispose();
        }
    }

    // ---- 1-2. Cancellation and admission ---------------------------------------------------------------------

    private void FreeCancelled()
    {
        foreach (var job in admitted.Where(j => j.Cancellation.IsCancellationRequested).ToArray())
        {
            Fail(job, new OperationCanceledException(job.Cancellation));
        }
    }

    private void Admit()
    {
        while (admitted.Count < settings.MaxActive)
        {
            Job? job;
            lock (queue)
            {
                job = queue.First?.Value;
                if (job is null)
                {
                    return;
                }

                queue.RemoveFirst();
                job.Node = null;
            }

            admitted.Add(job);
            Volatile.Write(ref activeCount, admitted.Count);
            try
            {
                Start(job);
            }
            catch (Exception e)
            {
                Fail(job, e);
            }
        }
    }

    /// <summary>Looks up the longest cached prefix and lays out what is left to prefill: tower blocks, then positions.</summary>
    private void Start(Job job)
    {
        var request = job.Request;
        job.Clock.Start();
        var llm = pipeline.Model.LanguageModel;
        int imageTokens = request.Image is null ? 0 : pipeline.ImageTokenCount;
        var cached = cache.Lookup(request.ImageKey, request.PromptIds);
        if (request.Remote is { } remote && remote.PrefixLength > (cached?.Length ?? 0) && stateStore?.Decode(remote, request.ImageKey, request.PromptIds) is { } fromStore)
        {
            cached?.State.Dispose();                                            // [state-store] a longer prefix from another replica
            cached = (fromStore, remote.PrefixLength);
        }

        job.State = cached?.State ?? llm.NewState();
        int reused = cached?.Length ?? 0;
        job.TextIds = request.PromptIds.Skip(reused).ToArray();
        job.InputTokens = imageTokens + request.PromptIds.Count;
        job.CachedInputTokens = cached is null ? 0 : imageTokens + reused;
        job.PrefillLength = (cached is null ? imageTokens : 0) + job.TextIds.Length;
        if (request.Image is not null && cached is null)
        {
            using var scope = torch.NewDisposeScope();
            var (dino, siglip) = pipeline.PreparePixels(request.Image);
            job.Vision = new ImageEncoding(pipeline.Model, dino, siglip);

            // After the image and the prompt prefix every first turn shares, keep a snapshot for new conversations about this image.
            if (sharedPromptPrefix > 0 && sharedPromptPrefix < request.PromptIds.Count && request.ImageKey is not null)
            {
                job.SnapshotAt = imageTokens + sharedPromptPrefix;
            }
        }

        job.Admission = Interlocked.Increment(ref requests);
        Interlocked.Add(ref promptTokens, job.InputTokens);
        Interlocked.Add(ref cachedPromptTokens, job.CachedInputTokens);
        LogStarted(logger, request.PromptIds.Count, imageTokens, job.CachedInputTokens);
    }

    // ---- 3. One batched decode step --------------------------------------------------------------------------

    /// <summary>
    /// One step for every decoding row; with <paramref name="withChunk"/>, the next prefill chunk rides in the same
    /// pass (<see cref="MambaForCausalLM.StepWithChunk"/>: one read of the weights for both), as many positions as
    /// the time box holds (<see cref="StreamingChunkPlan.Plan"/>), unless a plain step is due to re-measure the batch.
    /// </summary>
    private void DecodeStep(bool withChunk)
    {
        var clock = Stopwatch.StartNew();
        var members = Array.Empty<Choice>();
        List<Job>? chunkRows = null;
        int length = 0;
        try
        {
            SyncBatch();
            members = [.. batchMembers];
            if (withChunk && !StreamingChunkPlan.PlainStepDue(members.Length, decodeStepRows, stepsSincePlain))
            {
                (chunkRows, length) = PlanChunk(streaming: true, decodeStepMs * settings.PendingWorkPerStep);
            }

            using var scope = torch.NewDisposeScope();
            var llm = pipeline.Model.LanguageModel;
            var tokens = torch.tensor(members.Select(c => (long)c.Output[^1]).ToArray(), device: llm.Device); // [B]
            Tensor? logits = null;                                                 // [B,V]
            if (chunkRows is null)
            {
                logits = llm.Step(tokens, batch.Active);
            }
            else
            {
                PrefillChunk(chunkRows, length, (embeds, state, needLogits) =>
                {
                    var (step, chunk) = llm.StepWithChunk(tokens, batch.Active, embeds, state, needLogits);
                    logits = step.MoveToOuterDisposeScope();
                    return chunk;
                });
            }

            Accept(members, logits!);
        }
        catch (Exception e)
        {
            // A failed batched step leaves every state in it unknown: fail those requests, keep serving. Every decoding
            // choice without a state of its own lived in the batch (or was joining it when the bookkeeping failed).
            LogStepFailed(logger, e);
            foreach (var job in members.Concat(decoding.Where(c => c.State is null)).Select(c => c.Job).Concat(chunkRows ?? []).Distinct().ToArray())
            {
                Fail(job, e);
            }

            DropBatch();
        }

        double elapsed = clock.Elapsed.TotalMilliseconds;
        Interlocked.Increment(ref decodeSteps);
        Interlocked.Add(ref decodeRowsStepped, members.Length);
        LogStep(logger, members.Length, chunkRows?.Count ?? 0, length, elapsed, decodeStepMs, chunkTokenMs);
        stepsSincePlain = chunkRows is null ? 0 : stepsSincePlain + 1;
        if (chunkRows is null)
        {
            decodeStepMs = members.Length == decodeStepRows ? Average(decodeStepMs, elapsed) : elapsed; // a new batch size starts afresh
            decodeStepRows = members.Length;
        }
        else if (double.IsNaN(decodeStepMs))
        {
            decodeStepMs = elapsed;                                               // no plain step yet: an upper bound
        }
        else
        {
            // What the chunk's positions added to the step. Signed: a step's noise (tens of ms) over a few positions
            // swamps one sample, and clamping each at zero had biased the average up to 2-4x the true cost (the
            // chunks then shrank and prefill fell behind the decode batch); it is clamped where it is used.
            chunkTokenMs = Average(chunkTokenMs, (elapsed - decodeStepMs) / (length * chunkRows.Count));
        }
    }

    /// <summary>Samples every row of <paramref name="logits"/> [R, V] for <paramref name="rows"/> and advances each choice.</summary>
    private void Accept(Choice[] rows, Tensor logits)
    {
        var sampled = BatchSampler.Sample(logits, rows.Select(c => c.Row).ToArray(), pipeline.Tokenizer, pipeline.Model.LanguageModel.UseManagedKernels);
        float[][]? captured = rows.Any(c => c.Logits is not null) ? CopyRows(logits) : null;
        for (int i = 0; i < rows.Length; i++)
        {
            var choice = rows[i];
            if (choice.Job.Ended)
            {
                continue;                                                        // another choice of its request failed just now
            }

            try
            {
                if (sampled[i].Error is { } error)
                {
                    throw error;
                }

                if (captured is not null)
                {
                    choice.Logits?.Add(captured[i]);
                }

                if (Advance(choice, sampled[i]) is { } reason)
                {
                    FinishChoice(choice, reason);
                }
            }
            catch (Exception e)
            {
                Fail(choice.Job, e);
            }
        }
    }

    /// <summary>Adds the sampled token to the choice and reports its text; the finish reason when the choice is done.</summary>
    private FinishReason? Advance(Choice choice, SampledToken sampled)
    {
        int token = sampled.Token;
        choice.Output.Add(token);
        choice.Row.Accept(token);
        Interlocked.Increment(ref generatedTokens);
        if (sampled.Logprob is not null)
        {
            choice.PendingLogprobs.Add(sampled.Logprob);
        }

        if (token == pipeline.Tokenizer.EosTokenId)
        {
            return FinishReason.Stop;
        }

        choice.Write(choice.Decoder.Add(token));
        bool complete = choice.Row.Constraint?.IsComplete == true;
        return choice.Decoder.Stopped || complete ? FinishReason.Stop
            : choice.Output.Count >= choice.Job.Request.Sampling.MaxNewTokens ? FinishReason.Length
            : null;
    }

    /// <summary>
    /// Makes <see cref="batch"/> hold exactly the decoding rows' states, in <see cref="batchMembers"/>' order: each row
    /// that left takes the last row in its place (highest first, so the row moved in is one that stays), then the
    /// joiners' states are appended.
    /// </summary>
    private void SyncBatch()
    {
        for (int row = batchMembers.Count - 1; row >= 0; row--)
        {
            if (!decoding.Contains(batchMembers[row]))
            {
                batch.RemoveAt(row);
                batchMembers[row] = batchMembers[^1];
                batchMembers.RemoveAt(batchMembers.Count - 1);
            }
        }

        foreach (var joiner in decoding.Where(c => c.State is not null).ToList())
        {
            using var state = joiner.TakeState();
            batch.Append(state);                                                 // its rows were copied into the batch
            batchMembers.Add(joiner);
        }
    }

    private void DropBatch()
    {
        batch.Clear();
        batchMembers = [];
    }

    // ---- 4. A time-boxed slice of pending work ---------------------------------------------------------------

    /// <summary>
    /// Whether this iteration's pending work is the towers' (else a prefill chunk's, which rides in the decode step).
    /// While both wait, they take turns, so neither starves and a gap between tokens holds one kind's slice.
    /// </summary>
    private bool VisionTurn()
    {
        bool vision = admitted.Any(j => j.Vision is not null);
        bool prefill = admitted.Any(ReadyToPrefill);
        if (vision && prefill)
        {
            visionLeads = !visionLeads;
            return visionLeads;
        }

        return vision;
    }

    private static bool ReadyToPrefill(Job job) => job.Vision is null && job.State is not null && job.Position < job.PrefillLength;

    /// <summary>
    /// The work beside decoding. With streams decoding, prefill chunks ride in the decode step and this runs tower
    /// units on the towers' turn, about <see cref="EngineSettings.PendingWorkPerStep"/> steps' worth (at least one
    /// unit, so everything progresses). With none, one full prefill chunk and <see cref="IdleVisionSliceMs"/> of tower units.
    /// </summary>
    private void RunPendingWork(bool visionTurn)
    {
        if (decoding.Count == 0)
        {
            var (rows, length) = PlanChunk(streaming: false, double.PositiveInfinity);
            if (rows is not null)
            {
                try
                {
                    var llm = pipeline.Model.LanguageModel;
                    PrefillChunk(rows, length, (embeds, state, _) => llm.Forward(embeds, state));
                }
                catch (Exception e)
                {
                    foreach (var job in rows)
                    {
                        Fail(job, e);
                    }
                }
            }
        }

        if (decoding.Count == 0)
        {
            RunVisionUnits(IdleVisionSliceMs);                                   // then back to admission and cancellation
        }
        else if (visionTurn)
        {
            RunVisionUnits(decodeStepMs * settings.PendingWorkPerStep);          // NaN before the first step: one unit
        }
    }

    /// <summary>
    /// The next chunk: up to <see cref="EngineSettings.MaxPrefillBatch"/> requests whose image tokens are ready, one
    /// length for all: beside a decode step the time box's (<see cref="StreamingChunkPlan.Plan"/>), alone the shortest
    /// distance to a row's end or snapshot point, within the chunk cap; (null, 0) when none is ready.
    /// </summary>
    private (List<Job>? Rows, int Length) PlanChunk(bool streaming, double budgetMs)
    {
        var ready = admitted.Where(ReadyToPrefill).ToList();
        var rows = ready.Take(settings.MaxPrefillBatch).ToList();
        if (rows.Count == 0)
        {
            return (null, 0);
        }

        if (streaming)
        {
            var remaining = rows.Select(j => Math.Min(j.NextBoundary - j.Position, settings.PrefillChunkTokens)).ToArray();
            var (take, length) = StreamingChunkPlan.Plan(remaining, ready.Count, budgetMs, chunkTokenMs);
            return ([.. take.Select(i => rows[i])], length);
        }

        return (rows, Math.Min(rows.Min(j => j.NextBoundary - j.Position), settings.PrefillChunkTokens));
    }

    /// <summary>
    /// Feeds the next <paramref name="length"/> positions of every row through <paramref name="forward"/> (embeddings
    /// [R, L, D], the rows' state, whether logits are needed; returns [R, V] logits after the last position or null),
    /// then advances the rows: snapshots at their snapshot points, and a finished prompt forks into its choices.
    /// </summary>
    private void PrefillChunk(List<Job> rows, int length, Func<Tensor, MambaState, bool, Tensor?> forward)
    {
        bool ends = rows.Any(j => j.Position + length == j.PrefillLength);
        Tensor? logits;
        using (var scope = torch.NewDisposeScope())
        {
            var embeds = torch.cat(rows.Select(j => ChunkEmbeddings(j, length)).ToArray(), 0); // [R,length,D]
            if (rows.Count == 1)
            {
                logits = forward(embeds, rows[0].State!, ends)?.DetachFromDisposeScope();  // [1,V]
            }
            else
            {
                using var stacked = MambaState.Stack(rows.Select(j => j.State!).ToArray());
                logits = forward(embeds, stacked, ends)?.DetachFromDisposeScope();          // [R,V]
                var split = stacked.Split();
                for (int r = 0; r < rows.Count; r++)
                {
                    split[r].TokenCount = rows[r].State!.TokenCount + length;
                    rows[r].State!.Dispose();
                    rows[r].State = split[r];
                }
            }
        }

        using (logits)
        {
            for (int r = 0; r < rows.Count; r++)
            {
                var job = rows[r];
                job.Position += length;
                if (job.Position == job.SnapshotAt)
                {
                    cache.Store(job.Request.ImageKey, job.Request.PromptIds.Take(sharedPromptPrefix).ToArray(), job.State!);
                    stateStore?.Publish(job.Request.ImageKey, job.Request.PromptIds.Take(sharedPromptPrefix).ToArray(), job.State!); // [state-store]
                }

                if (job.Position == job.PrefillLength)
                {
                    using var last = logits!.narrow(0, r, 1);                          // [1,V]
                    FinishPrefill(job, last);
                }
            }
        }

        foreach (var job in rows.Where(j => j.ImageTokens is not null && j.Position >= j.ImageTokenCount))
        {
            job.ImageTokens!.Dispose();                                          // fed: the image tokens are no longer needed
            job.ImageTokens = null;
        }
    }

    /// <summary>Input embeddings of a job's next <paramref name="length"/> positions: image tokens first, then text: [1, length, D].</summary>
    private Tensor ChunkEmbeddings(Job job, int length)
    {
        var llm = pipeline.Model.LanguageModel;
        var parts = new List<Tensor>();
        int position = job.Position;
        int end = position + length;
        if (job.ImageTokens is not null && position < job.ImageTokenCount)
        {
            int take = Math.Min(end, job.ImageTokenCount) - position;
            parts.Add(job.ImageTokens.narrow(1, position, take).to(llm.DType));   // [1,take,D]
            position += take;
        }

        if (position < end)
        {
            int textStart = position - (job.PrefillLength - job.TextIds.Length);
            var ids = torch.tensor(job.TextIds.AsSpan(textStart, end - position).ToArray().Select(i => (long)i).ToArray(), device: llm.Device).unsqueeze(0); // [1,t]
            parts.Add(llm.Embed(ids));                                                // [1,t,D]
        }

        return parts.Count == 1 ? parts[0] : torch.cat(parts.ToArray(), 1);
    }

    /// <summary>The prompt is consumed: cache its state, fork it into the request's choices and pick their first tokens.</summary>
    private void FinishPrefill(Job job, Tensor lastLogits)
    {
        var request = job.Request;
        cache.Store(request.ImageKey, request.PromptIds, job.State!);
        stateStore?.Publish(request.ImageKey, request.PromptIds, job.State!);   // [state-store]
        job.FirstToken = job.Clock.Elapsed;
        var state = job.State!;
        job.State = null;
        var choices = new Choice[request.Choices];
        for (int i = 0; i < choices.Length; i++)
        {
            var constraint = request.Constraint?.Invoke();
            var row = new SamplingRow(request.Sampling, request.PromptIds, i, constraint, request.Logprobs, request.TopLogprobs);
            choices[i] = new Choice(job, i, i == 0 ? state : state.Clone(), row, new StreamingTextDecoder(pipeline.Tokenizer, request.StopSequences, verbatim: constraint is not null), request.CaptureLogits);
        }

        job.Choices = choices;
        job.ChoicesLeft = choices.Length;
        decoding.AddRange(choices);
        using var scope = torch.NewDisposeScope();
        Accept(choices, choices.Length == 1 ? lastLogits : lastLogits.expand(choices.Length, -1).contiguous()); // [n,V]
    }

    /// <summary>Tower units of the first request whose image is still being encoded, within <paramref name="budgetMs"/> (at least one).</summary>
    private void RunVisionUnits(double budgetMs)
    {
        var job = admitted.FirstOrDefault(j => j.Vision is not null);
        if (job is null)
        {
            return;
        }

        try
        {
            // Units differ (an attention half, an MLP half, the projector): one more runs only while a unit as
            // costly as the last one (or the average, if more) still fits the budget. Always at least one.
            var slice = Stopwatch.StartNew();
            while (true)
            {
                var unit = Stopwatch.StartNew();
                bool done = job.Vision!.Advance();
                double unitMs = unit.Elapsed.TotalMilliseconds;
                visionUnitMs = Average(visionUnitMs, unitMs);
                if (done)
                {
                    job.ImageTokens = job.Vision.Result!.alias().DetachFromDisposeScope(); // [1,P,D]
                    job.ImageTokenCount = (int)job.ImageTokens.shape[1];
                    job.Vision.Dispose();
                    job.Vision = null;
                    break;
                }

                if (double.IsNaN(budgetMs) || slice.Elapsed.TotalMilliseconds + Math.Max(unitMs, visionUnitMs) > budgetMs)
                {
                    break;
                }
            }
        }
        catch (Exception e)
        {
            Fail(job, e);
        }
    }

    // ---- Ends ------------------------------------------------------------------------------------------------

    /// <summary>Caches the choice's state (it has consumed every output token but the last) and reports its end.</summary>
    private void FinishChoice(Choice choice, FinishReason reason)
    {
        var job = choice.Job;
        var request = job.Request;
        decoding.Remove(choice);
        // [state-store] choice 0's turn end, when it ended with end-of-text (where the next prompt can find it)
        bool publish = stateStore is not null && choice.Index == 0 && choice.Output[^1] == pipeline.Tokenizer.EosTokenId;
        if (choice.State is not null)
        {
            cache.Store(request.ImageKey, [.. request.PromptIds, .. choice.Output[..^1]], choice.State);
            if (publish)
            {
                stateStore!.Publish(request.ImageKey, [.. request.PromptIds, .. choice.Output[..^1]], choice.State);
            }
        }
        else if (batchMembers.IndexOf(choice) is var row and >= 0 && row < batch.Count)
        {
            using var own = batch.CopyOfRow(row);
            cache.Store(request.ImageKey, [.. request.PromptIds, .. choice.Output[..^1]], own);
            if (publish)
            {
                stateStore!.Publish(request.ImageKey, [.. request.PromptIds, .. choice.Output[..^1]], own);
            }
        }

        if (reason == FinishReason.Length && choice.Row.Constraint is { IsComplete: false })
        {
            LogConstrainedValueCut(logger, choice.Output.Count);
        }

        choice.Write(choice.Decoder.Finish());
        job.Events.TryWrite(new ChoiceCompleted(choice.Index, reason, choice.Output.ToArray(), choice.Logits));
        choice.Release();
        if (--job.ChoicesLeft == 0)
        {
            var decodeTime = job.Clock.Elapsed - job.FirstToken;
            int output = job.Choices.Sum(c => c.Output.Count);
            job.Events.TryWrite(new GenerationCompleted(job.InputTokens, job.CachedInputTokens, output, job.FirstToken, decodeTime, job.Admission));
            job.Events.TryComplete();
            Remove(job);
            LogFinished(logger, output, reason);
        }
    }

    /// <summary>Ends a request with <paramref name="error"/> and frees everything it holds.</summary>
    private void Fail(Job job, Exception error)
    {
        job.Events.TryComplete(error);
        foreach (var choice in job.Choices)
        {
            decoding.Remove(choice);
            choice.Release();
        }

        Remove(job);
    }

    private void Remove(Job job)
    {
        job.Ended = true;
        admitted.Remove(job);
        Volatile.Write(ref activeCount, admitted.Count);
        job.Dispose();
    }

    private static float[][] CopyRows(Tensor logits)
    {
        using var host = logits.to(ScalarType.Float32).cpu();
        long vocab = host.shape[1];
        var all = host.data<float>().ToArray();
        return Enumerable.Range(0, (int)host.shape[0]).Select(r => all.AsSpan((int)(r * vocab), (int)vocab).ToArray()).ToArray();
    }

    private static double Average(double average, double sample) => double.IsNaN(average) ? sample : (0.8 * average) + (0.2 * sample);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Request started: {PromptTokens} prompt tokens, {ImageTokens} image tokens, {CachedTokens} reused from a cached state")]
    private static partial void LogStarted(ILogger logger, int promptTokens, int imageTokens, int cachedTokens);

    [LoggerMessage(Level = LogLevel.Trace, Message = "Step: {Rows} decode rows, prefill chunk {ChunkRows} x {ChunkLength}, {ElapsedMs:F1} ms (plain step {StepMs:F1} ms, {PositionMs:F2} ms a chunk position)")]
    private static partial void LogStep(ILogger logger, int rows, int chunkRows, int chunkLength, double elapsedMs, double stepMs, double positionMs);

    [LoggerMessage(Level = LogLevel.Error, Message = "A decode step failed; its requests were failed")]
    private static partial void LogStepFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Request finished: {OutputTokens} tokens, last choice {Reason}")]
    private static partial void LogFinished(ILogger logger, int outputTokens, FinishReason reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A constrained answer reached its token limit ({Tokens} tokens) inside the value: the JSON is incomplete (finish reason length)")]
    private static partial void LogConstrainedValueCut(ILogger logger, int tokens);

    /// <summary>One request from admission to its last choice.</summary>
    private sealed class Job(GenerationRequest request, ChannelWriter<GenerationEvent> events, CancellationToken cancellation) : IDisposable
    {
        public GenerationRequest Request { get; } = request;

        public ChannelWriter<GenerationEvent> Events { get; } = events;

        public CancellationToken Cancellation { get; } = cancellation;

        public CancellationTokenRegistration Registration { get; set; }

        public LinkedListNode<Job>? Node { get; set; }

        public Stopwatch Clock { get; } = new();

        public TimeSpan FirstToken { get; set; }

        public long Admission { get; set; }

        /// <summary>The prefill's state (batch 1) until the prompt is consumed.</summary>
        public MambaState? State { get; set; }

        /// <summary>The image's trip through the towers, until its tokens are ready.</summary>
        public ImageEncoding? Vision { get; set; }

        /// <summary>Image tokens [1, P, D] until the prefill has fed them.</summary>
        public Tensor? ImageTokens { get; set; }

        public int ImageTokenCount { get; set; }

        /// <summary>Text ids still to prefill (after the cached prefix).</summary>
        public int[] TextIds { get; set; } = [];

        /// <summary>Positions to prefill in all (image tokens unless cached, then the text ids).</summary>
        public int PrefillLength { get; set; }

        /// <summary>Positions prefilled so far.</summary>
        public int Position { get; set; }

        /// <summary>The position after which the image-prefix snapshot is taken, or -1.</summary>
        public int SnapshotAt { get; set; } = -1;

        public int NextBoundary => SnapshotAt > Position ? SnapshotAt : PrefillLength;

        public int InputTokens { get; set; }

        public int CachedInputTokens { get; set; }

        public Choice[] Choices { get; set; } = [];

        public int ChoicesLeft { get; set; }

        /// <summary>Completed or failed: nothing more may be written or run for it.</summary>
        public bool Ended { get; set; }

        public void Dispose()
        {
            Registration.Dispose();
            State?.Dispose();
            State = null;
            Vision?.Dispose();
            Vision = null;
            ImageTokens?.Dispose();
            ImageTokens = null;
        }
    }

    /// <summary>One completion of a request: a decode row with its own sampler, detokeniser and output.</summary>
    private sealed class Choice(Job job, int index, MambaState state, SamplingRow row, StreamingTextDecoder decoder, bool captureLogits)
    {
        public Job Job { get; } = job;

        public int Index { get; } = index;

        /// <summary>The choice's own state; null while its row lives in the engine's shared batch.</summary>
        public MambaState? State { get; private set; } = state;

        public SamplingRow Row { get; } = row;

        public StreamingTextDecoder Decoder { get; } = decoder;

        public List<int> Output { get; } = [];

        public List<float[]>? Logits { get; } = captureLogits ? [] : null;

        public List<CobraTokenLogprob> PendingLogprobs { get; } = [];

        /// <summary>Hands the choice's own state to the shared batch (the caller owns it from now on).</summary>
        public MambaState TakeState()
        {
            var state = State!;
            State = null;
            return state;
        }

        /// <summary>Reports new text (and the log-probabilities gathered since the last report).</summary>
        public void Write(string text)
        {
            if (text.Length == 0 && PendingLogprobs.Count == 0)
            {
                return;
            }

            var logprobs = PendingLogprobs.Count == 0 ? null : PendingLogprobs.ToArray();
            PendingLogprobs.Clear();
            Job.Events.TryWrite(new TextGenerated(text, Index, logprobs));
        }

        public void Release()
        {
            State?.Dispose();
            State = null;
        }
    }
}
