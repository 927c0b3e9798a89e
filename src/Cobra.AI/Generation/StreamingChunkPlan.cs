namespace Cobra.AI.Generation;

/// <summary>
/// How much prefill rides beside a decode step (vLLM's chunked prefill, sized by time instead of a token count),
/// and when a step goes without it. Pure arithmetic over the engine's measurements, so it is tested on its own.
/// </summary>
internal static class StreamingChunkPlan
{
    /// <summary>
    /// Fewest positions per row of a chunk beside a decode step (and the whole chunk before the first measurement).
    /// The chunk shares the step's weight reads and costs about its FLOPs; when the box holds fewer positions than
    /// every ready row would get this many, fewer rows go (first come, first served).
    /// </summary>
    public const int MinPerRow = 4;

    /// <summary>
    /// The most the box grows with the prompts waiting (x the plain box): each waits with its client idle, which
    /// costs throughput; one waiting prompt (an image prompt beside running streams) gets the plain box.
    /// </summary>
    public const int QueueBoost = 3;

    /// <summary>Steps with a chunk between two plain steps (which re-measure the step the chunks are sized against).</summary>
    public const int PlainStepEvery = 16;

    /// <summary>
    /// Rows to take (of <paramref name="readyRows"/>, in order) and the most positions each: as many positions as
    /// the box (<paramref name="budgetMs"/> x min(ready, <see cref="QueueBoost"/>)) holds at
    /// <paramref name="chunkTokenMs"/> a position (clamped: the estimate is a signed average), within the rows the
    /// step's kernels take at their best rate beside <paramref name="decodingRows"/> decode rows, and at least
    /// <see cref="MinPerRow"/> so prefill always progresses.
    /// </summary>
    public static (int Rows, int PerRow) Size(int readyRows, int decodingRows, int stepRowsLimit, double budgetMs, double chunkTokenMs)
    {
        int room = Math.Max(MinPerRow, stepRowsLimit - decodingRows);
        double box = budgetMs * Math.Min(readyRows, QueueBoost);
        int positions = double.IsNaN(chunkTokenMs) || double.IsNaN(box)
            ? MinPerRow
            : (int)Math.Clamp(box / Math.Max(chunkTokenMs, 0.05), MinPerRow, room);
        int rows = Math.Clamp(positions / MinPerRow, 1, Math.Max(1, readyRows));
        return (rows, Math.Max(MinPerRow, positions / rows));
    }

    /// <summary>
    /// True when a step should go without a chunk, to measure a plain step of the batch as it is now: the box and the
    /// per-position cost are both read against it, and under steady prefill traffic no plain step would run
    /// otherwise (a 1-row estimate had stayed in use at 16 rows: the box stayed a 1-row step long, the per-position
    /// cost read 2-4x too high, and prefill fell behind the decode batch). Due when none was measured, when the batch
    /// has grown or shrunk by more than a quarter since <paramref name="measuredRows"/>, and every <see cref="PlainStepEvery"/> steps.
    /// </summary>
    public static bool PlainStepDue(int rows, int measuredRows, int stepsSincePlain) =>
        measuredRows == 0 || Math.Abs(rows - measuredRows) > Math.Max(1, measuredRows / 4) || stepsSincePlain >= PlainStepEvery;
}
