using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// The element functions the fused kernels share: e^x, softplus and SiLU as the reference computes them in
/// float32, and reading / writing float32 or bf16 tensor memory (bf16 widened exactly, rounded to nearest even).
/// </summary>
internal static class KernelMath
{
    /// <summary>
    /// e^x to within 1.2e-7 relative (Cephes' expf: x = n ln2 + r, degree-6 polynomial in r, 2^n via the
    /// exponent bits). About 4x faster than <see cref="Vector.Exp(Vector{float})"/>, which dominates the scan.
    /// Inputs below −87.3 give ~1e-38 instead of 0 (a decay factor that small is zero for every purpose).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<float> Exp(Vector<float> x)
    {
        // The native min/max (one instruction each; x86 returns the second operand when either is NaN, so x goes
        // second and a NaN flows on into r, p and the result), and the native float -> int conversion (n is in range).
        x = Vector.MinNative(new Vector<float>(88.72283f), Vector.MaxNative(new Vector<float>(-87.33654f), x));
        var n = Vector.Round(x * new Vector<float>(1.44269504088896341f));     // round(x / ln 2)
        var r = Vector.FusedMultiplyAdd(n, new Vector<float>(-0.693359375f), x); // ln 2 split in two for accuracy
        r = Vector.FusedMultiplyAdd(n, new Vector<float>(2.12194440e-4f), r);
        var p = new Vector<float>(1.9875691500e-4f);
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(1.3981999507e-3f));
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(8.3334519073e-3f));
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(4.1665795894e-2f));
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(1.6666665459e-1f));
        p = Vector.FusedMultiplyAdd(p, r, new Vector<float>(5.0000001201e-1f));
        p = Vector.FusedMultiplyAdd(p * r, r, r + Vector<float>.One);
        var twoToN = Vector.AsVectorSingle((Vector.ConvertToInt32Native(n) + new Vector<int>(127)) << 23);
        return p * twoToN;
    }

    /// <summary>log₂e: e^x = 2^(x·log₂e), the scan's and the decode step's decay as a power of two.</summary>
    internal const float Log2E = 1.44269504088896341f;

    /// <summary>
    /// into[i] = −(e^source[i] · <paramref name="scale"/>) for elements [<paramref name="at"/>, at + <paramref name="count"/>) of
    /// <paramref name="source"/> (float32, or bf16 when <paramref name="bf16"/>): A = −exp(A_log) (scale 1, exact), as
    /// the prefill's scan takes it, or A·log₂e (scale log₂e, the bits of A times log₂e), the decode step's exponent
    /// factor for e^(ΔA) = 2^(Δ·A log₂e). 16 lanes at a time when <paramref name="wide"/>, then <see cref="Vector{T}"/>
    /// lanes, the last ones zero-padded; every width gives the same results.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a loop called a few times per step or chunk: skip tier-0 code, whose Exp is not inlined
    internal static unsafe void NegateExp(nint source, long at, bool bf16, float* into, int count, bool wide, float scale = 1f)
    {
        int done = 0;
        if (wide)
        {
            for (; done + 16 <= count; done += 16)
            {
                (-(Exp(LoadWide512(source, at + done, bf16)) * scale)).Store(into + done);
            }
        }

        for (; done + Vector<float>.Count <= count; done += Vector<float>.Count)
        {
            Store(-(Exp(LoadWide(source, at + done, bf16)) * scale), into + done);
        }

        if (done < count)
        {
            float* tail = stackalloc float[Vector<float>.Count];
            for (int k = 0; k < Vector<float>.Count; k++)
            {
                tail[k] = done + k < count ? Read(source, at + done + k, bf16) : 0;
            }

            var v = -(Exp(Load(tail)) * scale);
            for (int k = 0; done + k < count; k++)
            {
                into[done + k] = v[k];
            }
        }
    }

    /// <summary>
    /// <see cref="Exp(Vector{float})"/> on 16 lanes, the same operations lane by lane (so the same results): the
    /// decode step's state update runs one d_state-16 channel per register where the CPU has 512-bit vectors.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Exp(Vector512<float> x)
    {
        x = Vector512.MinNative(Vector512.Create(88.72283f), Vector512.MaxNative(Vector512.Create(-87.33654f), x));
        var n = Vector512.Round(x * Vector512.Create(1.44269504088896341f));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), x);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
        var p = Vector512.Create(1.9875691500e-4f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        p = Vector512.FusedMultiplyAdd(p * r, r, r + Vector512<float>.One);
        var twoToN = ((Vector512.ConvertToInt32Native(n) + Vector512.Create(127)) << 23).AsSingle();
        return p * twoToN;
    }

    /// <summary>
    /// 2^y on 16 lanes to within 1.7e-7 relative (Cephes' exp2f: y = n + f, |f| ≤ ½, 2^f = 1 + f·P(f) of degree 5,
    /// 2^n applied by AVX-512's scale instruction): the scan's decay e^(ΔA) as 2^(Δ·A·log₂e) with A·log₂e computed
    /// once per channel, which takes 7 multiply-adds to <see cref="Exp(Vector512{float})"/>'s 12 (the scan is bound by
    /// them). y is clamped below at −125, so results stay normal (≥ 2^−125.5; a decay that small is zero for every
    /// purpose and a denormal would cost a microcode assist in every later operation); past 2^128 the result is +inf;
    /// NaN propagates. For y ≤ 127 bitwise <see cref="Pow2(Vector{float})"/>'s (which adds n to the exponent bits):
    /// the scale and the clamp on one side only save 3 of a scan update's ~17 instructions.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Pow2(Vector512<float> y)
    {
        y = Vector512.MaxNative(Vector512.Create(-125f), y);
        var n = Vector512.Round(y);
        var f = y - n;                                                           // exact
        var p = Vector512.Create(1.535336188319500e-4f);
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(1.339887440266574e-3f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(9.618437357674640e-3f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(5.550332471162809e-2f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(2.402264791363012e-1f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(6.931472028550421e-1f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512<float>.One);              // 2^f in [0.707, 1.415]
        return Avx512F.IsSupported
            ? Avx512F.Scale(p, n)                                                // p·2^n in one instruction (+inf past 2^128)
            : (p.AsInt32() + (Vector512.ConvertToInt32Native(Vector512.Min(n, Vector512.Create(127f))) << 23)).AsSingle();
    }

    /// <summary><see cref="Pow2(Vector512{float})"/> on <see cref="Vector{T}"/> lanes (y clamped to [−125, 127]; 2^n added to the exponent bits): the same results for y ≤ 127.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<float> Pow2(Vector<float> y)
    {
        y = Vector.MinNative(new Vector<float>(127f), Vector.MaxNative(new Vector<float>(-125f), y));
        var n = Vector.Round(y);
        var f = y - n;
        var p = new Vector<float>(1.535336188319500e-4f);
        p = Vector.FusedMultiplyAdd(p, f, new Vector<float>(1.339887440266574e-3f));
        p = Vector.FusedMultiplyAdd(p, f, new Vector<float>(9.618437357674640e-3f));
        p = Vector.FusedMultiplyAdd(p, f, new Vector<float>(5.550332471162809e-2f));
        p = Vector.FusedMultiplyAdd(p, f, new Vector<float>(2.402264791363012e-1f));
        p = Vector.FusedMultiplyAdd(p, f, new Vector<float>(6.931472028550421e-1f));
        p = Vector.FusedMultiplyAdd(p, f, Vector<float>.One);
        return Vector.AsVectorSingle(Vector.AsVectorInt32(p) + (Vector.ConvertToInt32Native(n) << 23));
    }

    /// <summary>
    /// ln x for positive normal x to within 8e-8 relative (Cephes' logf: x = m 2^e with m in [√½, √2), ln(1 + (m − 1))
    /// by a degree-8 polynomial, e ln 2 in two parts), inline: .NET's <see cref="Vector512.Log(Vector512{float})"/> is a
    /// call with the scan's live registers spilled around it, which took a third of the scan's time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Log(Vector512<float> x)
    {
        var bits = x.AsInt32();
        var e = Vector512.ConvertToSingle((bits >> 23) - Vector512.Create(126));                  // x = m 2^e, m in [½, 1)
        var m = ((bits & Vector512.Create(0x007FFFFF)) | Vector512.Create(0x3F000000)).AsSingle();
        var small = Vector512.LessThan(m, Vector512.Create(0.707106781186547524f));
        e -= Vector512.ConditionalSelect(small, Vector512<float>.One, Vector512<float>.Zero);
        m = Vector512.ConditionalSelect(small, m + m, m) - Vector512<float>.One;
        var z = m * m;
        var p = Vector512.Create(7.0376836292e-2f);
        p = Vector512.FusedMultiplyAdd(p, m, Vector512.Create(-1.1514610310e-1f));
        p = Vector512.FusedMultiplyAdd(p, m, Vector512.Create(1.1676998740e-1f));
        p = Vector512.FusedMultiplyAdd(p, m, Vector512.Create(-1.2420140846e-1f));
        p = Vector512.FusedMultiplyAdd(p, m, Vector512.Create(1.4249322787e-1f));
        p = Vector512.FusedMultiplyAdd(p, m, Vector512.Create(-1.6668057665e-1f));
        p = Vector512.FusedMultiplyAdd(p, m, Vector512.Create(2.0000714765e-1f));
        p = Vector512.FusedMultiplyAdd(p, m, Vector512.Create(-2.4999993993e-1f));
        p = Vector512.FusedMultiplyAdd(p, m, Vector512.Create(3.3333331174e-1f));
        var y = p * m * z;
        y = Vector512.FusedMultiplyAdd(e, Vector512.Create(-2.12194440e-4f), y);
        y = Vector512.FusedMultiplyAdd(z, Vector512.Create(-0.5f), y);
        return Vector512.FusedMultiplyAdd(e, Vector512.Create(0.693359375f), m + y);
    }

    /// <summary><see cref="Log(Vector512{float})"/> on <see cref="Vector{T}"/> lanes, the same operations lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<float> Log(Vector<float> x)
    {
        var bits = Vector.AsVectorInt32(x);
        var e = Vector.ConvertToSingle((bits >> 23) - new Vector<int>(126));
        var m = Vector.AsVectorSingle((bits & new Vector<int>(0x007FFFFF)) | new Vector<int>(0x3F000000));
        var small = Vector.LessThan(m, new Vector<float>(0.707106781186547524f));
        e -= Vector.ConditionalSelect(small, Vector<float>.One, Vector<float>.Zero);
        m = Vector.ConditionalSelect(small, m + m, m) - Vector<float>.One;
        var z = m * m;
        var p = new Vector<float>(7.0376836292e-2f);
        p = Vector.FusedMultiplyAdd(p, m, new Vector<float>(-1.1514610310e-1f));
        p = Vector.FusedMultiplyAdd(p, m, new Vector<float>(1.1676998740e-1f));
        p = Vector.FusedMultiplyAdd(p, m, new Vector<float>(-1.2420140846e-1f));
        p = Vector.FusedMultiplyAdd(p, m, new Vector<float>(1.4249322787e-1f));
        p = Vector.FusedMultiplyAdd(p, m, new Vector<float>(-1.6668057665e-1f));
        p = Vector.FusedMultiplyAdd(p, m, new Vector<float>(2.0000714765e-1f));
        p = Vector.FusedMultiplyAdd(p, m, new Vector<float>(-2.4999993993e-1f));
        p = Vector.FusedMultiplyAdd(p, m, new Vector<float>(3.3333331174e-1f));
        var y = p * m * z;
        y = Vector.FusedMultiplyAdd(e, new Vector<float>(-2.12194440e-4f), y);
        y = Vector.FusedMultiplyAdd(z, new Vector<float>(-0.5f), y);
        return Vector.FusedMultiplyAdd(e, new Vector<float>(0.693359375f), m + y);
    }

    /// <summary><see cref="RoundToBFloat16(Vector{float})"/> on 16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> RoundToBFloat16(Vector512<float> value)
    {
        var bits = value.AsUInt32();
        var rounded = (bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One)) & Vector512.Create(0xFFFF0000u);
        var nan = Vector512.GreaterThan(bits & Vector512.Create(0x7FFF_FFFFu), Vector512.Create(0x7F80_0000u));
        return Vector512.ConditionalSelect(nan, bits | Vector512.Create(0x0040_0000u), rounded).AsSingle();
    }

    /// <summary>softplus(v) with torch's threshold 20 (the identity above it); log1p(e^v) kept accurate for small e^v.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<float> Softplus(Vector<float> v)
    {
        var e = Exp(v);
        var onePlus = Vector<float>.One + e;
        var log1p = Vector.ConditionalSelect(Vector.Equals(onePlus, Vector<float>.One), e, Log(onePlus) * (e / (onePlus - Vector<float>.One)));
        return Vector.ConditionalSelect(Vector.GreaterThan(v, new Vector<float>(20f)), v, log1p);
    }

    /// <summary><see cref="Softplus(Vector{float})"/> on 16 lanes, the same operations lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Softplus(Vector512<float> v)
    {
        var e = Exp(v);
        var onePlus = Vector512<float>.One + e;
        var log1p = Vector512.ConditionalSelect(Vector512.Equals(onePlus, Vector512<float>.One), e, Log(onePlus) * (e / (onePlus - Vector512<float>.One)));
        return Vector512.ConditionalSelect(Vector512.GreaterThan(v, Vector512.Create(20f)), v, log1p);
    }

    /// <summary>x · sigmoid(x) on 16 lanes, as <see cref="Silu(Vector{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Silu(Vector512<float> v) => v / (Vector512<float>.One + Exp(-v));

    /// <summary>16 values at element <paramref name="at"/>, widened from bf16 when <paramref name="bf16"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector512<float> LoadWide512(nint data, long at, bool bf16) =>
        bf16 ? (Vector512.WidenLower(Vector256.Load((ushort*)data + at).ToVector512Unsafe()) << 16).AsSingle() : Vector512.Load((float*)data + at);

    /// <summary>Stores 16 lanes at element <paramref name="at"/>, rounded to bf16 (nearest even) when <paramref name="bf16"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void StoreNarrow512(Vector512<float> value, nint data, long at, bool bf16)
    {
        if (!bf16)
        {
            value.Store((float*)data + at);
            return;
        }

        var bits = RoundToBFloat16(value).AsUInt32() >> 16;
        Vector512.Narrow(bits, bits).GetLower().Store((ushort*)data + at);
    }

    /// <summary>Vector&lt;float&gt;.Count values at element <paramref name="at"/>, widened from bf16 when <paramref name="bf16"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector<float> LoadWide(nint data, long at, bool bf16)
    {
        if (!bf16)
        {
            return Load((float*)data + at);
        }

        if (Vector<float>.Count == Vector256<float>.Count && Vector256.IsHardwareAccelerated)
        {
            var raw = Vector128.Load((ushort*)data + at).ToVector256Unsafe();   // 8 bf16 in the low half
            return (Vector256.WidenLower(raw) << 16).AsSingle().AsVector();
        }

        Span<float> values = stackalloc float[Vector<float>.Count];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = BitConverter.Int32BitsToSingle(((ushort*)data)[at + i] << 16);
        }

        return new Vector<float>(values);
    }

    /// <summary>Stores a vector at element <paramref name="at"/>, rounded to bf16 (nearest even) when <paramref name="bf16"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void StoreNarrow(Vector<float> value, nint data, long at, bool bf16)
    {
        if (!bf16)
        {
            Store(value, (float*)data + at);
            return;
        }

        ushort* to = (ushort*)data + at;
        if (Vector<float>.Count == Vector256<float>.Count && Vector256.IsHardwareAccelerated)
        {
            // BFloat16Bits.Round lane-wise: the rounded pattern's upper halves, narrowed to 8 x 16 bits.
            var bits = Vector.AsVectorUInt32(RoundToBFloat16(value)).AsVector256() >> 16;
            Vector256.Narrow(bits, bits).GetLower().Store(to);
            return;
        }

        for (int i = 0; i < Vector<float>.Count; i++)
        {
            to[i] = BFloat16Bits.Round(value[i]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector<float> Load(float* at) => Unsafe.ReadUnaligned<Vector<float>>(at);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void Store(Vector<float> value, float* at) => Unsafe.WriteUnaligned(at, value);

    /// <summary>softplus(v) with torch's threshold 20 (the identity above it); log1p(e^v) kept accurate for small e^v.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Softplus(float v)
    {
        if (v > 20f)
        {
            return v;
        }

        float e = MathF.Exp(v);
        float onePlus = 1f + e;
        return onePlus == 1f ? e : MathF.Log(onePlus) * (e / (onePlus - 1f));    // log1p(e), Goldberg's correction
    }

    /// <summary>x · sigmoid(x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Silu(float v) => v / (1f + MathF.Exp(-v));

    /// <summary>x · sigmoid(x), per lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<float> Silu(Vector<float> v) => v / (Vector<float>.One + Exp(-v));

    /// <summary>Element <paramref name="at"/> as float32 (bf16 widened when <paramref name="bf16"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe float Read(nint data, long at, bool bf16) =>
        bf16 ? BitConverter.Int32BitsToSingle(((ushort*)data)[at] << 16) : ((float*)data)[at];

    /// <summary>Writes element <paramref name="at"/> (rounded to bf16 when <paramref name="bf16"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void Write(nint data, long at, float value, bool bf16)
    {
        if (bf16)
        {
            ((ushort*)data)[at] = BFloat16Bits.Round(value);
        }
        else
        {
            ((float*)data)[at] = value;
        }
    }

    /// <summary><paramref name="count"/> floats (the rest zero) without reading past them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector<float> LoadPartial(float* at, int count)
    {
        if (count == Vector<float>.Count)
        {
            return Load(at);
        }

        Span<float> values = stackalloc float[Vector<float>.Count];
        for (int i = 0; i < count; i++)
        {
            values[i] = at[i];
        }

        return new Vector<float>(values);
    }

    /// <summary>Each lane rounded to the nearest bf16 (ties to even) and widened back: the bf16 cache's read.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<float> RoundToBFloat16(Vector<float> value)
    {
        var bits = Vector.AsVectorUInt32(value);
        var rounded = (bits + new Vector<uint>(0x7FFFu) + ((bits >> 16) & Vector<uint>.One)) & new Vector<uint>(0xFFFF0000u);
        var nan = Vector.GreaterThan(bits & new Vector<uint>(0x7FFF_FFFFu), new Vector<uint>(0x7F80_0000u));
        return Vector.AsVectorSingle(Vector.ConditionalSelect(nan, bits | new Vector<uint>(0x0040_0000u), rounded));
    }
}
