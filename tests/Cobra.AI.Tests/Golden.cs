using Cobra.AI.Loading;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Cobra.AI.Tests;

/// <summary>Paths into the golden kits and the kit README §8 tolerance check.</summary>
internal static class Golden
{
    public static string Fixtures(params string[] parts) =>
        Path.Combine([AppContext.BaseDirectory, "fixtures", .. parts]);

    public static string TinyAHub => Fixtures("tiny-a", "hub");

    public static string Expected(string kitCase) => Fixtures("tiny-a", "expected", kitCase + ".safetensors");

    /// <summary>
    /// Kit README §8: relative L2 ≤ 1e-4 and max |out − ref| ≤ 1e-4 · max(1, max |ref|).
    /// </summary>
    public static void AssertClose(Tensor expected, Tensor actual, string name, double tolerance = 1e-4)
    {
        using var scope = torch.NewDisposeScope();
        var reference = expected.to(ScalarType.Float64);
        var result = actual.to(ScalarType.Float64).cpu();
        Assert.True(reference.shape.SequenceEqual(result.shape), $"{name}: shape [{string.Join(",", result.shape)}] != expected [{string.Join(",", reference.shape)}]");
        double refNorm = reference.norm().item<double>();
        double diffNorm = (result - reference).norm().item<double>();
        double maxAbs = (result - reference).abs().max().item<double>();
        double bound = tolerance * Math.Max(1.0, reference.abs().max().item<double>());
        Assert.True(diffNorm <= tolerance * Math.Max(refNorm, 1e-30), $"{name}: relative L2 {diffNorm / refNorm:E3} > {tolerance:E1}");
        Assert.True(maxAbs <= bound, $"{name}: max |diff| {maxAbs:E3} > {bound:E3}");
    }

    public static long[] Ids(SafetensorsFile file, string key)
    {
        using var t = file.Read(key);
        return t.to(ScalarType.Int64).data<long>().ToArray();
    }
}
