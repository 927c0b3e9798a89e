using System.Threading.Channels;
using Cobra.AI.Modeling;
using Cobra.AI.Modeling.Mamba;
using Cobra.AI.Text;
using Microsoft.Extensions.Logging;
using TorchSharp;
using static TorchSharp.torch;

namespace Cobra.AI.Generation;

/// <summary>
/// Owns one loaded model and the only thread that touches its tensors. Requests arrive through a channel;
/// each is prefilled on its own (in chunks, so cancellation is seen and a long prompt cannot stall the
/// others for long), then all active requests advance one token per engine step in one batch whose state
/// persists across steps (rows are added and dropped as requests join and leave). Every prefill chunk and step runs in its own dispose scope under no-grad; nothing
/// tensor-related crosses a thread or an <c>await</c>. Text leaves through a per-request channel.
/// </summary>
internal sealed partial class InferenceEngine : IDisposable
{
    private readonly CobraPipeline pipeline;
    private readonly int maxActive;
    private readonly int prefillChunk;
    private readonly ILogger logger;
    private readonly Channel<Job> queue = Channel.CreateUnbounded<Job>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Thread thread;
    private readonly ConversationStateCache cache;
    private int disposed;
    private long liveTensors;

    // Decoding requests share one batched state; it is rebuilt only when requests join or leave.
    private MambaState? batch;
    private List<Active> batchMembers = [];
    private int activeCount;

    /// <summary>Starts the inference thread for <paramref name="pipeline"/> (owned from now on).</summary>
    public InferenceEngine(CobraPipeline pipeline, int maxActive, int conversationCacheSize, ILogger logger, int prefillChunk = 256)
    {
        this.pipeline = pipeline;
        this.maxActive = Math.Max(1, maxActive);
        this.prefillChunk = Math.Max(1, prefillChunk);
        this.logger = logger;
        cache = new ConversationStateCache(conversationCacheSize);
        thread = new Thread(Run) { IsBackground = true, Name = "cobra-inference" };
        thread.Start();
    }

    /// <summary>The model this engine runs.</summary>
    public CobraPipeline Pipeline => pipeline;

    /// <summary>Tensors alive on the inference thread after its last loop iteration (a leak check for tests and diagnostics).</summary>
    public long LiveTensorCount => Volatile.Read(ref liveTensors);

    /// <summary>Requests being decoded right now (diagnostics).</summary>
    public int ActiveCount => Volatile.Read(ref activeCount);

    /// <summary>
    /// Queues a request; its events arrive on the returned reader, which completes after
    /// <see cref="GenerationCompleted"/> or with the request's exception (an <see cref="OperationCanceledException"/>
    /// when <paramref name="cancellationToken"/> fires).
    /// </summary>
    public ChannelReader<GenerationEvent> Submit(GenerationRequest request, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        var events = Channel.CreateUnbounded<GenerationEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        if (!queue.Writer.TryWrite(new Job(request, events.Writer, cancellationToken)))
        {
            throw new ObjectDisposedException(nameof(InferenceEngine));
        }

        return events.Reader;
    }

    /// <summary>Stops accepting requests, fails queued ones, finishes the thread and frees the model.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        queue.Writer.TryComplete();
        thread.Join();
        pipeline.Dispose();
    }

    private void Run()
    {
        TorchRuntime.EnsureInitialized();
        var active = new List<Active>();
        try
        {
            while (true)
            {
                Volatile.Write(ref liveTensors, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
                Volatile.Write(ref activeCount, active.Count);
                if (Volatile.Read(ref disposed) != 0 || (active.Count == 0 && !queue.Reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult()))
                {
                    break;                                                       // the finally block fails what is left
                }

                while (active.Count < maxActive && queue.Reader.TryRead(out var job))
                {
                    if (Start(job) is { } started)
                    {
                        active.Add(started);
                    }
                }

                if (active.Count > 0)
                {
                    try
                    {
                        Step(active);
                    }
                    catch (Exception e)
                    {
                        // A failed batched step leaves every state in it unknown: fail those requests, keep serving.
                        LogStepFailed(logger, e);
                        foreach (var a in active)
                        {
                            a.Fail(e);
                        }

                        active.Clear();
                        batch?.Dispose();
                        batch = null;
                        batchMembers = [];
                    }
                }
            }
        }
        finally
        {
            foreach (var a in active)
            {
                a.Fail(new ObjectDisposedException(nameof(InferenceEngine)));
            }

            batch?.Dispose();

            while (queue.Reader.TryRead(out var job))
            {
                job.Events.TryComplete(new ObjectDisposedException(nameof(InferenceEngine)));
            }

            cache.Dispose();
        }
    }

    /// <summary>Prefills one request (reusing the longest cached conversation prefix) and picks its first token.</summary>
    private Active? Start(Job job)
    {
        MambaState? state = null;
        Active? started = null;
        try
        {
            job.Cancellation.ThrowIfCancellationRequested();
            var request = job.Request;
            var llm = pipeline.Model.LanguageModel;
            int imageTokens = request.Image is null ? 0 : pipeline.ImageTokenCount;
            var cached = cache.Lookup(request.ImageKey, request.PromptIds);
            state = cached?.State ?? llm.NewState();
            int reusedText = cached?.Length ?? 0;

            Tensor logits;
            using (var scope = torch.NewDisposeScope())
            {
                Tensor? image = null;
                if (request.Image is not null && cached is null)
                {
                    var (dino, siglip) = pipeline.PreparePixels(request.Image);
                    image = pipeline.Model.EncodeImage(dino, siglip);                // [1,P,D]
                }

                var ids = torch.tensor(request.PromptIds.Skip(reusedText).Select(i => (long)i).ToArray(), device: llm.Device).unsqueeze(0);
                var embeds = pipeline.Model.InputEmbeddings(image, ids);            // [1,P+T',D]
                logits = Prefill(embeds, state, job.Cancellation).DetachFromDisposeScope(); // [1,V]
            }

            cache.Store(request.ImageKey, request.PromptIds, state);
            int cachedInput = cached is null ? 0 : imageTokens + reusedText;
            LogStarted(logger, request.PromptIds.Count, imageTokens, cachedInput);
            started = new Active(job, state, new Sampler(request.Sampling, llm.Device), new StreamingTextDecoder(pipeline.Tokenizer, request.StopSequences), imageTokens + request.PromptIds.Count, cachedInput);
            state = null;
            if (Accept(started, logits) is { } finish)
            {
                Finish(started, started.State!, finish);
                return null;
            }

            return started;
        }
        catch (Exception e)
        {
            var error = e is OperationCanceledException ? new OperationCanceledException(job.Cancellation) : e;
            if (started is not null)
            {
                started.Fail(error);
            }
            else
            {
                state?.Dispose();
                job.Events.TryComplete(error);
            }

            return null;
        }
    }

    /// <summary>The full-sequence path in chunks, checking cancellation between them; logits of the last position.</summary>
    private Tensor Prefill(Tensor embeds, MambaState state, CancellationToken cancellation)
    {
        var llm = pipeline.Model.LanguageModel;
        long length = embeds.shape[1];
        Tensor? logits = null;
        for (long start = 0; start < length; start += prefillChunk)
        {
            cancellation.ThrowIfCancellationRequested();
            using var scope = torch.NewDisposeScope();
            logits?.Dispose();
            logits = llm.Forward(embeds.narrow(1, start, Math.Min(prefillChunk, length - start)), state).MoveToOuterDisposeScope();
        }

        return logits!;
    }

    /// <summary>One decode step for every active request, batched.</summary>
    private void Step(List<Active> active)
    {
        active.RemoveAll(a =>
        {
            if (!a.Job.Cancellation.IsCancellationRequested)
            {
                return false;
            }

            a.Fail(new OperationCanceledException(a.Job.Cancellation));
            return true;
        });
        if (active.Count == 0)
        {
            DropBatch();
            return;
        }

        SyncBatch(active);
        var llm = pipeline.Model.LanguageModel;
        using var scope = torch.NewDisposeScope();
        var members = batch is null ? active : batchMembers;
        var tokens = torch.tensor(members.Select(a => (long)a.Output[^1]).ToArray(), device: llm.Device); // [B]
        var logits = llm.Step(tokens, batch ?? active[0].State!);                  // [B,V]
        var finished = new List<(int Row, Active Request, FinishReason Reason)>();
        for (int i = 0; i < members.Count; i++)
        {
            try
            {
                if (Accept(members[i], logits[i].unsqueeze(0)) is { } finish)
                {
                    finished.Add((i, members[i], finish));
                }
            }
            catch (Exception e)
            {
                members[i].Fail(e);
                active.Remove(members[i]);
            }
        }

        foreach (var (row, request, reason) in finished)
        {
            using var own = batch?.Select([row]);
            Finish(request, own ?? request.State!, reason);
            active.Remove(request);
        }
    }

    /// <summary>Makes <see cref="batch"/> hold exactly the active requests' states: drops rows that left, appends joiners.</summary>
    private void SyncBatch(List<Active> active)
    {
        if (active.Count == 1 && batch is null)
        {
            return;                                                               // a lone request steps on its own state
        }

        if (batch is not null)
        {
            var staying = batchMembers.Select((a, i) => (a, i)).Where(m => active.Contains(m.a)).ToList();
            if (staying.Count == 0)
            {
                DropBatch();
            }
            else if (staying.Count < batchMembers.Count)
            {
                var kept = batch.Select(staying.Select(m => (long)m.i).ToArray());
                batch.Dispose();
                batch = kept;
                batchMembers = staying.Select(m => m.a).ToList();
            }
        }

        var joiners = active.Where(a => !batchMembers.Contains(a)).ToList();
        if (joiners.Count == 0)
        {
            return;
        }

        var parts = (batch is null ? [] : new[] { batch }).Concat(joiners.Select(a => a.State!)).ToArray();
        var grown = MambaState.Stack(parts);
        batch?.Dispose();
        batch = grown;
        foreach (var joiner in joiners)
        {
            joiner.MoveIntoBatch();
        }

        batchMembers = [.. batchMembers, .. joiners];
    }

    private void DropBatch()
    {
        batch?.Dispose();
        batch = null;
        batchMembers = [];
    }

    /// <summary>Samples the next token from [1, V] logits and reports its text; the finish reason when the request is done.</summary>
    private FinishReason? Accept(Active a, Tensor logits)
    {
        var request = a.Job.Request;
        int token;
        using (var scope = torch.NewDisposeScope())
        {
            token = (int)a.Sampler.Next(logits, request.PromptIds, a.Output).item<long>();
        }

        logits.Dispose();
        a.Output.Add(token);
        if (token == pipeline.Tokenizer.EosTokenId)
        {
            return FinishReason.Stop;
        }

        a.Write(a.Decoder.Add(token));
        return a.Decoder.Stopped ? FinishReason.Stop
            : a.Output.Count >= request.Sampling.MaxNewTokens ? FinishReason.Length
            : null;
    }

    /// <summary>Caches the conversation state (it has consumed every output token but the last) and completes the request.</summary>
    private void Finish(Active a, MambaState state, FinishReason reason)
    {
        var request = a.Job.Request;
        cache.Store(request.ImageKey, [.. request.PromptIds, .. a.Output[..^1]], state);
        a.Write(a.Decoder.Finish());
        a.Complete(new GenerationCompleted(reason, a.InputTokens, a.CachedInputTokens, a.Output.Count, a.Output.ToArray()));
        LogFinished(logger, a.Output.Count, reason);
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Request started: {PromptTokens} prompt tokens, {ImageTokens} image tokens, {CachedTokens} reused from a cached conversation state")]
    private static partial void LogStarted(ILogger logger, int promptTokens, int imageTokens, int cachedTokens);

    [LoggerMessage(Level = LogLevel.Error, Message = "A decode step failed; its requests were failed")]
    private static partial void LogStepFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Request finished: {OutputTokens} tokens, {Reason}")]
    private static partial void LogFinished(ILogger logger, int outputTokens, FinishReason reason);

    private sealed record Job(GenerationRequest Request, ChannelWriter<GenerationEvent> Events, CancellationToken Cancellation);

    /// <summary>A request between its prefill and its last token; owns its state and sampler.</summary>
    private sealed class Active(Job job, MambaState state, Sampler sampler, StreamingTextDecoder decoder, int inputTokens, int cachedInputTokens)
    {
        public Job Job { get; } = job;

        /// <summary>The request's own state; null while its row lives in the engine's shared batch.</summary>
        public MambaState? State { get; private set; } = state;

        public Sampler Sampler { get; } = sampler;

        public StreamingTextDecoder Decoder { get; } = decoder;

        public List<int> Output { get; } = [];

        public int InputTokens { get; } = inputTokens;

        public int CachedInputTokens { get; } = cachedInputTokens;

        /// <summary>The state's row was copied into the shared batch: free the request's own copy.</summary>
        public void MoveIntoBatch()
        {
            State?.Dispose();
            State = null;
        }

        public void Write(string text)
        {
            if (text.Length > 0)
            {
                Job.Events.TryWrite(new TextGenerated(text));
            }
        }

        public void Complete(GenerationCompleted completed)
        {
            Job.Events.TryWrite(completed);
            Job.Events.TryComplete();
            Release();
        }

        public void Fail(Exception error)
        {
            Job.Events.TryComplete(error);
            Release();
        }

        private void Release()
        {
            State?.Dispose();
            Sampler.Dispose();
        }
    }
}
