using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
        var log1p = Vector.ConditionalSelect(Vector.Equals(onePlus, Vector<float>.One), e, Vector.Log(onePlus) * (e / (onePlus - Vector<float>.One)));
        return Vector.ConditionalSelect(Vector.GreaterThan(v, new Vector<float>(20f)), v, log1p);
    }

    /// <summary><see cref="Softplus(Vector{float})"/> on 16 lanes, the same operations lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Softplus(Vector512<float> v)
    {
        var e = Exp(v);
        var onePlus = Vector512<float>.One + e;
        var log1p = Vector512.ConditionalSelect(Vector512.Equals(onePlus, Vector512<float>.One), e, Vector512.Log(onePlus) * (e / (onePlus - Vector512<float>.One)));
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
