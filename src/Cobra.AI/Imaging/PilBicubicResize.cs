namespace Cobra.AI.Imaging;

/// <summary>
/// Port of Pillow's <c>ImagingResample</c> with the BICUBIC filter on 8-bit RGB (src/libImaging/Resample.c):
/// separable convolution, horizontal pass first, 22-bit fixed-point coefficients and uint8 rounding after
/// each pass. Cobra's torchvision <c>Resize</c> on a PIL image lands here, and any other resampler differs by
/// a few levels, so every arithmetic step below mirrors Pillow's.
/// </summary>
internal static class PilBicubicResize
{
    // Pillow: 32 bits minus 8 for the pixel minus 2 for coefficient overshoot of the negative-lobed filter.
    private const int PrecisionBits = 32 - 8 - 2;
    private const double FilterSupport = 2.0;

    /// <summary>Resizes to <paramref name="width"/>×<paramref name="height"/>; the same size returns a copy.</summary>
    public static RgbImage Resize(RgbImage image, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);

        var vertical = Coefficients.Compute(image.Height, height);
        // Pillow only runs the horizontal pass over the source rows the vertical pass reads.
        int firstRow = vertical.Start[0];
        int lastRow = vertical.Start[height - 1] + vertical.Count[height - 1];

        RgbImage current = image;
        int rowOffset = 0;
        if (width != image.Width)
        {
            current = ResampleHorizontal(image, firstRow, lastRow - firstRow, Coefficients.Compute(image.Width, width));
            rowOffset = firstRow;
        }

        if (height != image.Height)
        {
            return ResampleVertical(current, rowOffset, vertical);
        }

        return ReferenceEquals(current, image) ? image with { Pixels = (byte[])image.Pixels.Clone() } : current;
    }

    private static RgbImage ResampleHorizontal(RgbImage source, int firstRow, int rows, Coefficients c)
    {
        var output = RgbImage.Blank(c.OutSize, rows);
        byte[] src = source.Pixels, dst = output.Pixels;
        for (int y = 0; y < rows; y++)
        {
            int rowBase = (y + firstRow) * source.Width;
            for (int x = 0; x < c.OutSize; x++)
            {
                int start = c.Start[x], count = c.Count[x], k = x * c.KernelSize;
                int o = (y * c.OutSize + x) * 3;
                for (int ch = 0; ch < 3; ch++)
                {
                    int acc = 1 << (PrecisionBits - 1);
                    for (int i = 0; i < count; i++)
                    {
                        acc += src[(rowBase + start + i) * 3 + ch] * c.Fixed[k + i];
                    }

                    dst[o + ch] = Clip8(acc);
                }
            }
        }

        return output;
    }

    private static RgbImage ResampleVertical(RgbImage source, int rowOffset, Coefficients c)
    {
        var output = RgbImage.Blank(source.Width, c.OutSize);
        byte[] src = source.Pixels, dst = output.Pixels;
        int stride = source.Width * 3;
        for (int y = 0; y < c.OutSize; y++)
        {
            int start = c.Start[y] - rowOffset, count = c.Count[y], k = y * c.KernelSize;
            for (int i = 0; i < stride; i++)
            {
                int acc = 1 << (PrecisionBits - 1);
                for (int j = 0; j < count; j++)
                {
                    acc += src[(start + j) * stride + i] * c.Fixed[k + j];
                }

                dst[y * stride + i] = Clip8(acc);
            }
        }

        return output;
    }

    private static byte Clip8(int accumulator) => (byte)Math.Clamp(accumulator >> PrecisionBits, 0, 255);

    /// <summary>Keys cubic convolution kernel with a = −0.5, written in Pillow's Horner form so rounding matches.</summary>
    private static double Bicubic(double x)
    {
        const double a = -0.5;
        if (x < 0.0)
        {
            x = -x;
        }

        if (x < 1.0)
        {
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        }

        if (x < 2.0)
        {
            return (((x - 5) * x + 8) * x - 4) * a;
        }

        return 0.0;
    }

    /// <summary>Per-output-pixel source window and fixed-point weights (Pillow's <c>precompute_coeffs</c> + <c>normalize_coeffs_8bpc</c>).</summary>
    private sealed class Coefficients
    {
        public required int OutSize { get; init; }
        public required int KernelSize { get; init; }
        public required int[] Start { get; init; }
        public required int[] Count { get; init; }
        public required int[] Fixed { get; init; }

        public static Coefficients Compute(int inSize, int outSize)
        {
            // Pillow passes the box edges as floats; for the full image they are exact integers.
            double scale = (double)(float)inSize / outSize;
            double filterScale = Math.Max(scale, 1.0);
            double support = FilterSupport * filterScale;
            int kernelSize = (int)Math.Ceiling(support) * 2 + 1;
            double invFilterScale = 1.0 / filterScale;

            var start = new int[outSize];
            var count = new int[outSize];
            var weights = new double[outSize * kernelSize];
            for (int xx = 0; xx < outSize; xx++)
            {
                double center = (xx + 0.5) * scale;
                int xmin = Math.Max((int)(center - support + 0.5), 0);
                int xmax = Math.Min((int)(center + support + 0.5), inSize) - xmin;
                Span<double> k = weights.AsSpan(xx * kernelSize, kernelSize);
                double sum = 0.0;
                for (int x = 0; x < xmax; x++)
                {
                    k[x] = Bicubic((x + xmin - center + 0.5) * invFilterScale);
                    sum += k[x];
                }

                if (sum != 0.0)
                {
                    for (int x = 0; x < xmax; x++)
                    {
                        k[x] /= sum;
                    }
                }

                start[xx] = xmin;
                count[xx] = xmax;
            }

            return new Coefficients { OutSize = outSize, KernelSize = kernelSize, Start = start, Count = count, Fixed = ToFixedPoint(weights) };
        }

        private static int[] ToFixedPoint(double[] weights)
        {
            var result = new int[weights.Length];
            for (int i = 0; i < weights.Length; i++)
            {
                // Round half away from zero, as normalize_coeffs_8bpc does (a C cast truncates toward zero).
                double scaled = weights[i] * (1 << PrecisionBits);
                result[i] = (int)(weights[i] < 0 ? scaled - 0.5 : scaled + 0.5);
            }

            return result;
        }
    }
}
