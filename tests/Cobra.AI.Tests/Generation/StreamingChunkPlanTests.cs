using Cobra.AI.Generation;
using Xunit;

namespace Cobra.AI.Tests.Generation;

/// <summary>The sizing of prefill chunks beside decode steps, and when a step goes without one.</summary>
public sealed class StreamingChunkPlanTests
{
    [Fact]
    public void Before_any_measurement_the_first_row_gets_the_smallest_chunk()
    {
        AssertPlan([0], StreamingChunkPlan.MinPositions, StreamingChunkPlan.Plan([40, 40, 40], waiting: 3, budgetMs: double.NaN, chunkTokenMs: double.NaN));
        AssertPlan([0], StreamingChunkPlan.MinPositions, StreamingChunkPlan.Plan([40, 40, 40], 3, budgetMs: 30, chunkTokenMs: double.NaN));
    }

    [Theory]
    [InlineData(new[] { 40 }, 36.0, 2.0, new[] { 0 }, 18)]                       // one prompt: the plain box, 18 positions
    [InlineData(new[] { 40, 40 }, 36.0, 2.0, new[] { 0 }, 36)]                   // two: twice the box, all of it to the first
    [InlineData(new[] { 30, 40, 50, 40, 40 }, 36.0, 2.0, new[] { 0, 1, 2 }, 30)]  // the box (5x: 90) finishes the first; two more join at 30
    [InlineData(new[] { 10, 40, 5, 40, 40 }, 36.0, 2.0, new[] { 0, 1, 3, 4 }, 10)] // a short first row: others join at its length (not the 5)
    [InlineData(new[] { 12, 12, 12, 12, 12, 12, 12, 12 }, 200.0, 2.0, new[] { 0, 1, 2, 3, 4, 5, 6, 7 }, 12)] // a big box: whole prompts, all eight
    [InlineData(new[] { 40, 40, 40, 40 }, 70.0, 2.0, new[] { 0, 1, 2 }, 40)]      // ... as many as it holds (140 positions)
    [InlineData(new[] { 40, 40, 40 }, 8.0, 2.0, new[] { 0 }, 12)]                // a small box: one row
    [InlineData(new[] { 40, 40, 40 }, 1.0, 2.0, new[] { 0 }, 4)]                 // a box smaller than one position: still 4
    [InlineData(new[] { 2, 40 }, 36.0, 2.0, new[] { 0, 1 }, 2)]                  // the first row's last positions; the next rides along
    [InlineData(new[] { 300, 300 }, 36.0, -3.0, new[] { 0, 1 }, 300)]            // a negative (signed) estimate: as much as the rows allow
    public void Fills_the_time_box_first_come_first_served(int[] remaining, double budgetMs, double chunkTokenMs, int[] rows, int length)
    {
        AssertPlan(rows, length, StreamingChunkPlan.Plan(remaining, remaining.Length, budgetMs, chunkTokenMs));
    }

    [Theory]
    [InlineData(1, 18)]                                                           // one waiting: the plain box
    [InlineData(3, 54)]                                                           // a box per prompt waiting
    [InlineData(40, 108)]                                                         // ... at most QueueBoost (6)
    public void The_box_grows_with_the_prompts_waiting(int waiting, int positions)
    {
        var remaining = Enumerable.Repeat(1000, Math.Min(waiting, 8)).ToArray();
        AssertPlan([0], positions, StreamingChunkPlan.Plan(remaining, waiting, budgetMs: 36, chunkTokenMs: 2));
    }

    [Fact]
    public void Refuses_an_empty_or_inconsistent_plan()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => StreamingChunkPlan.Plan([], 0, 36, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => StreamingChunkPlan.Plan([40, 40], waiting: 1, 36, 2));
    }

    private static void AssertPlan(int[] rows, int length, (int[] Rows, int Length) plan)
    {
        Assert.Equal(rows, plan.Rows);
        Assert.Equal(length, plan.Length);
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
