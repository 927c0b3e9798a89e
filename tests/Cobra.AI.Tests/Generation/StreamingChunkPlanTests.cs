using Cobra.AI.Generation;
using Xunit;

namespace Cobra.AI.Tests.Generation;

/// <summary>The sizing of prefill chunks beside decode steps, and when a step goes without one.</summary>
public sealed class StreamingChunkPlanTests
{
    [Fact]
    public void Before_any_measurement_one_row_gets_the_smallest_chunk()
    {
        Assert.Equal((1, StreamingChunkPlan.MinPerRow), StreamingChunkPlan.Size(readyRows: 3, decodingRows: 2, stepRowsLimit: 128, budgetMs: double.NaN, chunkTokenMs: double.NaN));
        Assert.Equal((1, StreamingChunkPlan.MinPerRow), StreamingChunkPlan.Size(3, 2, 128, budgetMs: 30, chunkTokenMs: double.NaN));
    }

    [Theory]
    [InlineData(1, 10, 36.0, 2.0, 1, 18)]                                         // one prompt: the plain box, 18 positions
    [InlineData(2, 10, 36.0, 2.0, 2, 18)]                                         // two: twice the box, split evenly
    [InlineData(5, 10, 36.0, 2.0, 5, 10)]                                         // five: the box grows to 3x, 54 positions
    [InlineData(8, 10, 8.0, 2.0, 3, 4)]                                           // a small box: fewer rows, 4 positions each
    [InlineData(3, 10, 1.0, 2.0, 1, 4)]                                           // a box smaller than one position: still 4
    [InlineData(2, 10, 36.0, -3.0, 2, 59)]                                        // a negative (signed) estimate: as much as the rows allow
    public void Fills_the_time_box(int ready, int decoding, double budgetMs, double chunkTokenMs, int rows, int perRow)
    {
        Assert.Equal((rows, perRow), StreamingChunkPlan.Size(ready, decoding, stepRowsLimit: 128, budgetMs, chunkTokenMs));
    }

    [Fact]
    public void Stays_within_the_rows_the_step_kernels_take_and_still_progresses()
    {
        Assert.Equal((2, 4), StreamingChunkPlan.Size(readyRows: 4, decodingRows: 120, stepRowsLimit: 128, budgetMs: 200, chunkTokenMs: 1));
        Assert.Equal((1, 4), StreamingChunkPlan.Size(readyRows: 4, decodingRows: 130, stepRowsLimit: 128, budgetMs: 200, chunkTokenMs: 1));
        var (rows, perRow) = StreamingChunkPlan.Size(readyRows: 2, decodingRows: 4, stepRowsLimit: int.MaxValue, budgetMs: 1000, chunkTokenMs: 0.5);
        Assert.Equal((2, 2000), (rows, perRow));                                   // no kernel limit (CUDA, fp32): the box alone (2x: two wait)
    }

    [Theory]
    [InlineData(16, 0, 0, true)]                                                  // nothing measured yet
    [InlineData(16, 16, 3, false)]
    [InlineData(20, 16, 3, false)]                                                // grown by a quarter: still the same batch
    [InlineData(21, 16, 3, true)]                                                 // more: re-measure
    [InlineData(11, 16, 3, true)]
    [InlineData(2, 1, 3, false)]                                                  // one row either way is within tolerance
    [InlineData(3, 1, 3, true)]
    [InlineData(16, 16, StreamingChunkPlan.PlainStepEvery, true)]                 // and every so many steps
    public void A_plain_step_is_due_when_the_measured_batch_is_stale(int rows, int measuredRows, int stepsSincePlain, bool due)
    {
        Assert.Equal(due, StreamingChunkPlan.PlainStepDue(rows, measuredRows, stepsSincePlain));
    }
}
