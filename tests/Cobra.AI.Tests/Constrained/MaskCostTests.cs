using Cobra.AI.Generation.Constrained;
using Xunit;
using Xunit.Abstractions;

namespace Cobra.AI.Tests.Constrained;

public sealed class MaskCostTests(ITestOutputHelper output)
{
    [Fact]
    public void Mask_cost_on_the_gpt_neox_vocabulary_is_reported()
    {
        // Reported, not asserted (timings belong in the bench): the states a schema answer passes through most.
        ConstraintBenchResult result = ConstraintBench.Run(ConstraintHarness.Tokenizer, ConstraintHarness.PaddedVocab, masks: 60);
        output.WriteLine(result.ToString());
        Assert.True(result.Masks >= 60);
        Assert.True(result.AllowedPerMask > 0);
    }
}
