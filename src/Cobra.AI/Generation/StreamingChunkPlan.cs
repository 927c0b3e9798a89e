namespace Cobra.AI.Generation;

/// <summary>
/// How much prefill rides beside a decode step (vLLM's chunked prefill, sized by time instead of a token count),
/// and when a step goes without it. Pure arithmetic over the engine's measurements, so it is tested on its own.
/// </summary>
internal static class StreamingChunkPlan
{
    /// <summary>
    /// Fewest positions a chunk beside a decode step holds (and the whole chunk before the first measurement), so
    /// prefill always progresses.
    /// </summary>
    public const int MinPositions = 4;

    /// <summary>
    /// The box grows with the prompts waiting, up to this many plain boxes: each waits with its client idle, and
    /// once its first token is out it decodes in the batch at the larger batch's rate; one waiting prompt (an image
    /// prompt beside running streams) gets the plain box. 6, measured with 64 text clients arriving 50 ms apart, 8
    /// layers, two rounds each: 56 % of the decode ceiling and first-token p95 7.8 s against 51 % and 9.8 s at 3 (the
    /// streams' inter-token p99 grew from 0.5-0.7 to 0.9 s during the ramp); at most 3 prompts wait in the mixed
    /// full-depth load, whose boxes this leaves as they were.
    /// </summary>
    public const int QueueBoost = 6;

    /// <summary>Steps with a chunk between two plain steps (which re-measure the step the chunks are sized against).</summary>
    public const int PlainStepEvery = 16;

    /// <summary>
    /// The chunk beside a decode step: which of the ready rows go (indices into <paramref name="remaining"/>, each
    /// row's positions to its next boundary, in arrival order) and how many positions each feeds. The box is
    /// <paramref name="budgetMs"/> x min(waiting, <see cref="QueueBoost"/>), with <paramref name="waiting"/> the
    /// prompts ready to prefill (<paramref name="remaining"/> holds the first of them); it holds so many positions
    /// at <paramref name="chunkTokenMs"/> each (clamped: the estimate is a signed average), at least
    /// <see cref="MinPositions"/>. The first row goes as far as the box lets it, and later rows join at that
    /// length while the box holds them: a prompt finishes in as few steps as it can and starts decoding (first come,
    /// first served), and the chunk has few rows, each many positions. (Spreading the box thin, 8 rows x 4
    /// positions, had cost 2.2-3.3 ms a position against 1.5-1.8 for 1 x 32 beside a 10-32 row step, 8 layers: each
    /// row's conv and scan run alone and the rows' states are stacked and split again every step; and every
    /// prompt's first token waited for all of them.)
    /// </summary>
    public static (int[] Rows, int Length) Plan(IReadOnlyList<int> remaining, int waiting, double budgetMs, double chunkTokenMs)
    {
        ArgumentOutOfRangeException.ThrowIfZero(remaining.Count);
        ArgumentOutOfRangeException.ThrowIfLessThan(waiting, remaining.Count);
        double box = budgetMs * Math.Min(waiting, QueueBoost);
        int positions = double.IsNaN(chunkTokenMs) || double.IsNaN(box)
            ? MinPositions
            : (int)Math.Min(Math.Max(box / Math.Max(chunkTokenMs, 0.05), MinPositions), int.MaxValue);
        int length = Math.Max(1, Math.Min(remaining[0], positions));
        var rows = new List<int> { 0 };
        for (int i = 1; i < remaining.Count && (rows.Count + 1) * (long)length <= positions; i++)
        {
            if (remaining[i] >= length)
            {
                rows.Add(i);
            }
        }

        return ([.. rows], length);
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
