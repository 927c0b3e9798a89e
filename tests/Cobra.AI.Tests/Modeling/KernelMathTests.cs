using System.Numerics;
using System.Runtime.Intrinsics;
using Cobra.AI.Modeling.Kernels;
using Xunit;

namespace Cobra.AI.Tests.Modeling;

/// <summary>The scan's 2^y at both register widths: accurate, bitwise alike, and the edges each side of the clamp.</summary>
public sealed class KernelMathTests
{
    [Fact]
    public void Pow2_is_accurate_and_the_same_at_both_widths()
    {
        var ys = Enumerable.Range(0, 40_000).Select(i => -140f + (i * (267f / 40_000))).Append(-0f).Append(0.5f).Append(-0.5f).ToArray(); // −140 .. 127
        for (int i = 0; i + Vector<float>.Count <= ys.Length; i += Vector<float>.Count)
        {
            var narrow = KernelMath.Pow2(new Vector<float>(ys.AsSpan(i, Vector<float>.Count)));
            for (int j = 0; j < Vector<float>.Count; j++)
            {
                float y = ys[i + j];
                double expected = Math.Pow(2, Math.Max(y, -125));                // clamped below: results stay normal
                Assert.True(Math.Abs(narrow[j] - expected) <= 2e-7 * expected, $"2^{y}: {narrow[j]} vs {expected}");
            }

            if (Vector512.IsHardwareAccelerated && i + 16 <= ys.Length)
            {
                var wide = KernelMath.Pow2(Vector512.Create(ys.AsSpan(i, 16)));
                for (int j = 0; j < 16; j++)
                {
                    Assert.Equal(BitConverter.SingleToInt32Bits(KernelMath.Pow2(new Vector<float>(ys[i + j]))[0]), BitConverter.SingleToInt32Bits(wide[j]));
                }
            }
        }
    }

    [Fact]
    public void Pow2_propagates_nan_and_takes_minus_infinity_to_the_clamp()
    {
        Assert.True(float.IsNaN(KernelMath.Pow2(new Vector<float>(float.NaN))[0]));
        Assert.Equal(MathF.Pow(2, -125), KernelMath.Pow2(new Vector<float>(float.NegativeInfinity))[0], 1e-44f);
        if (Vector512.IsHardwareAccelerated)
        {
            Assert.True(float.IsNaN(KernelMath.Pow2(Vector512.Create(float.NaN))[0]));
            Assert.Equal(MathF.Pow(2, -125), KernelMath.Pow2(Vector512.Create(float.NegativeInfinity))[0], 1e-44f);
            Assert.True(float.IsPositiveInfinity(KernelMath.Pow2(Vector512.Create(130f))[0]));    // past 2^128
        }
    }
}
