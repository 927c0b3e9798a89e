using Cobra.AI.Imaging;
using Cobra.AI.Loading;
using Cobra.AI.Modeling;
using TorchSharp;
using Xunit;

namespace Cobra.AI.Tests.Imaging;

/// <summary>The tiny-a kit's preprocessing goldens (kit README §5), produced by Pillow 9.4 and torchvision.</summary>
public sealed class GoldenPreprocessingTests
{
    private const int Size = 56;

    [Theory]
    [InlineData("img_scene", "scene_100x70.png")]
    [InlineData("img_rgba", "badge_64x64_rgba.png")]
    public void Resize_naive_matches_pillow_bit_for_bit(string kitCase, string imageFile)
    {
        TorchRuntime.EnsureInitialized();
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        var image = ImageLoader.LoadFile(Golden.Fixtures("tiny-a", "images", imageFile), new ImageLimits());

        foreach (var (key, tower) in Towers)
        {
            var resized = CobraImageTransform.Resize(image, Size, ResizeStrategy.ResizeNaive, tower);
            using var reference = expected.Read($"image.resized_rgb_u8.{key}");
            Assert.Equal(new long[] { Size, Size, 3 }, reference.shape);
            Assert.Equal(reference.data<byte>().ToArray(), resized.Pixels);
        }
    }

    [Theory]
    [InlineData("img_scene", "scene_100x70.png")]
    [InlineData("img_rgba", "badge_64x64_rgba.png")]
    public void Pixel_values_match_torchvision(string kitCase, string imageFile)
    {
        TorchRuntime.EnsureInitialized();
        using var expected = SafetensorsFile.Open(Golden.Expected(kitCase));
        var image = ImageLoader.LoadFile(Golden.Fixtures("tiny-a", "images", imageFile), new ImageLimits());

        foreach (var (key, tower) in Towers)
        {
            var resized = CobraImageTransform.Resize(image, Size, ResizeStrategy.ResizeNaive, tower);
            using var actual = CobraImageTransform.ToTensor(resized, tower);
            using var reference = expected.Read($"pixel_values.{key}");
            Assert.Equal(reference.shape, actual.shape);
            using var diff = (actual - reference).abs().max();
            Assert.True(diff.item<float>() <= 1e-6f, $"{kitCase} {key}: max |diff| {diff.item<float>():E3}");
        }
    }

    private static readonly (string Key, TowerNormalization Tower)[] Towers =
        [("dino", TowerNormalization.Dino), ("siglip", TowerNormalization.SigLip)];
}
