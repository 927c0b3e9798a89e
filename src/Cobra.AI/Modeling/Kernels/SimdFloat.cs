using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Cobra.AI.Modeling.Kernels;

/// <summary>
/// A float32 SIMD register of one width, so each kernel is written once and runs at the widest width the CPU
/// offers (<see cref="SimdWidth"/>): the JIT specialises a generic method per struct type argument and
/// inlines these members, so a kernel over <see cref="Simd512"/> compiles to plain AVX-512 code.
/// </summary>
/// <typeparam name="TSelf">The implementing struct.</typeparam>
internal interface ISimdFloat<TSelf>
    where TSelf : struct, ISimdFloat<TSelf>
{
    /// <summary>float32 lanes.</summary>
    static abstract int Lanes { get; }

    /// <summary>Loads <see cref="Lanes"/> floats.</summary>
    static abstract unsafe TSelf Load(float* at);

    /// <summary>
    /// The even-indexed bf16 values of the 2·<see cref="Lanes"/> at <paramref name="at"/> as float32 (a bf16 is
    /// the top half of a float32; read as 32-bit pairs, the even element is the low half, shifted up).
    /// </summary>
    static abstract unsafe TSelf EvenBFloat16(ushort* at);

    /// <summary>The odd-indexed bf16 values of the 2·<see cref="Lanes"/> at <paramref name="at"/> (the pairs' top halves).</summary>
    static abstract unsafe TSelf OddBFloat16(ushort* at);

    /// <summary><paramref name="value"/> in every lane.</summary>
    static abstract TSelf Broadcast(float value);

    /// <summary>a + b, per lane.</summary>
    static abstract TSelf Add(TSelf a, TSelf b);

    /// <summary>a·b + acc with one rounding.</summary>
    static abstract TSelf MultiplyAdd(TSelf a, TSelf b, TSelf acc);

    /// <summary>The sum of every lane of a + b (a fixed order: results never depend on the caller).</summary>
    static abstract float SumOfBoth(TSelf a, TSelf b);
}

/// <summary>
/// The lane-wise vocabulary of the elementwise kernels (the scan) at one width: arithmetic, and
/// <see cref="KernelMath"/>'s functions, so such a kernel is written once for every width it runs at.
/// </summary>
/// <typeparam name="TSelf">The implementing struct.</typeparam>
internal interface ISimdMath<TSelf>
    where TSelf : unmanaged, ISimdMath<TSelf>
{
    /// <summary>float32 lanes.</summary>
    static abstract int Lanes { get; }

    /// <summary>Loads <see cref="Lanes"/> floats.</summary>
    static abstract unsafe TSelf Load(float* at);

    /// <summary>Stores <see cref="Lanes"/> floats.</summary>
    static abstract unsafe void Store(TSelf value, float* at);

    /// <summary><paramref name="value"/> in every lane.</summary>
    static abstract TSelf Broadcast(float value);

    /// <summary>a·b + acc with one rounding.</summary>
    static abstract TSelf MultiplyAdd(TSelf a, TSelf b, TSelf acc);

    /// <summary>a + b, per lane.</summary>
    static abstract TSelf operator +(TSelf a, TSelf b);

    /// <summary>a·b, per lane.</summary>
    static abstract TSelf operator *(TSelf a, TSelf b);

    /// <summary>2^y (<see cref="KernelMath.Pow2(Vector{float})"/>).</summary>
    static abstract TSelf Pow2(TSelf y);

    /// <summary>The larger of a and b per lane (either where one is NaN: check <see cref="HasNaN"/>).</summary>
    static abstract TSelf Max(TSelf a, TSelf b);

    /// <summary>The largest lane.</summary>
    static abstract float MaxAcross(TSelf v);

    /// <summary>The sum of the lanes (a fixed order).</summary>
    static abstract float SumAcross(TSelf v);

    /// <summary>True when some lane is NaN.</summary>
    static abstract bool HasNaN(TSelf v);

    /// <summary>The first lane equal to <paramref name="value"/>, or −1.</summary>
    static abstract int FirstLaneEqual(TSelf v, float value);

    /// <summary>softplus (<see cref="KernelMath.Softplus(Vector{float})"/>).</summary>
    static abstract TSelf Softplus(TSelf v);

    /// <summary>x · sigmoid(x) (<see cref="KernelMath.Silu(Vector{float})"/>).</summary>
    static abstract TSelf Silu(TSelf v);

    /// <summary><see cref="Lanes"/> values at element <paramref name="at"/>, widened from bf16 when <paramref name="bf16"/>.</summary>
    static abstract TSelf LoadWide(nint data, long at, bool bf16);

    /// <summary>Stores the lanes at element <paramref name="at"/>, rounded to bf16 (nearest even) when <paramref name="bf16"/>.</summary>
    static abstract void StoreNarrow(TSelf value, nint data, long at, bool bf16);
}

/// <summary>512-bit registers (AVX-512).</summary>
internal readonly struct Simd512 : ISimdFloat<Simd512>, ISimdMath<Simd512>
{
    private readonly Vector512<float> value;

    private Simd512(Vector512<float> value) => this.value = value;

    /// <inheritdoc />
    public static int Lanes => Vector512<float>.Count;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd512 Load(float* at) => new(Vector512.Load(at));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd512 EvenBFloat16(ushort* at) => new((Vector512.Load((uint*)at) << 16).AsSingle());

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd512 OddBFloat16(ushort* at) => new((Vector512.Load((uint*)at) & Vector512.Create(0xFFFF0000u)).AsSingle());

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 Broadcast(float value) => new(Vector512.Create(value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 Add(Simd512 a, Simd512 b) => new(a.value + b.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 MultiplyAdd(Simd512 a, Simd512 b, Simd512 acc) => new(Vector512.FusedMultiplyAdd(a.value, b.value, acc.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumOfBoth(Simd512 a, Simd512 b) => Vector512.Sum(a.value + b.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Store(Simd512 value, float* at) => value.value.Store(at);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 operator +(Simd512 a, Simd512 b) => new(a.value + b.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 operator *(Simd512 a, Simd512 b) => new(a.value * b.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 Pow2(Simd512 y) => new(KernelMath.Pow2(y.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 Max(Simd512 a, Simd512 b) => new(Vector512.MaxNative(a.value, b.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Simd512 v) => MathF.Max(Simd256Max(v.value.GetLower()), Simd256Max(v.value.GetUpper()));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumAcross(Simd512 v) => Vector512.Sum(v.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool HasNaN(Simd512 v) => !Vector512.EqualsAll(v.value, v.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int FirstLaneEqual(Simd512 v, float value)
    {
        ulong bits = Vector512.Equals(v.value, Vector512.Create(value)).ExtractMostSignificantBits();
        return bits == 0 ? -1 : System.Numerics.BitOperations.TrailingZeroCount(bits);
    }

    private static float Simd256Max(Vector256<float> v)
    {
        var m = Vector128.MaxNative(v.GetLower(), v.GetUpper());
        return MathF.Max(MathF.Max(m[0], m[1]), MathF.Max(m[2], m[3]));
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 Softplus(Simd512 v) => new(KernelMath.Softplus(v.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 Silu(Simd512 v) => new(KernelMath.Silu(v.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd512 LoadWide(nint data, long at, bool bf16) => new(KernelMath.LoadWide512(data, at, bf16));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreNarrow(Simd512 value, nint data, long at, bool bf16) => KernelMath.StoreNarrow512(value.value, data, at, bf16);
}

/// <summary><see cref="Vector{T}"/> registers: the width .NET picks for this process, which the elementwise kernels use below 512 bits.</summary>
internal readonly struct SimdVector : ISimdMath<SimdVector>
{
    private readonly Vector<float> value;

    private SimdVector(Vector<float> value) => this.value = value;

    /// <inheritdoc />
    public static int Lanes => Vector<float>.Count;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe SimdVector Load(float* at) => new(KernelMath.Load(at));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Store(SimdVector value, float* at) => KernelMath.Store(value.value, at);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector Broadcast(float value) => new(new Vector<float>(value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector MultiplyAdd(SimdVector a, SimdVector b, SimdVector acc) => new(Vector.FusedMultiplyAdd(a.value, b.value, acc.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector operator +(SimdVector a, SimdVector b) => new(a.value + b.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector operator *(SimdVector a, SimdVector b) => new(a.value * b.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector Pow2(SimdVector y) => new(KernelMath.Pow2(y.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector Max(SimdVector a, SimdVector b) => new(Vector.MaxNative(a.value, b.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(SimdVector v)
    {
        float max = v.value[0];
        for (int i = 1; i < Vector<float>.Count; i++)
        {
            max = MathF.Max(max, v.value[i]);
        }

        return max;
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumAcross(SimdVector v) => Vector.Sum(v.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool HasNaN(SimdVector v) => !Vector.EqualsAll(v.value, v.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int FirstLaneEqual(SimdVector v, float value)
    {
        var equal = Vector.Equals(v.value, new Vector<float>(value));
        for (int i = 0; i < Vector<float>.Count; i++)
        {
            if (equal[i] != 0)
            {
                return i;
            }
        }

        return -1;
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector Softplus(SimdVector v) => new(KernelMath.Softplus(v.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector Silu(SimdVector v) => new(KernelMath.Silu(v.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector LoadWide(nint data, long at, bool bf16) => new(KernelMath.LoadWide(data, at, bf16));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreNarrow(SimdVector value, nint data, long at, bool bf16) => KernelMath.StoreNarrow(value.value, data, at, bf16);
}

/// <summary>256-bit registers (AVX2).</summary>
internal readonly struct Simd256 : ISimdFloat<Simd256>
{
    private readonly Vector256<float> value;

    private Simd256(Vector256<float> value) => this.value = value;

    /// <inheritdoc />
    public static int Lanes => Vector256<float>.Count;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd256 Load(float* at) => new(Vector256.Load(at));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd256 EvenBFloat16(ushort* at) => new((Vector256.Load((uint*)at) << 16).AsSingle());

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd256 OddBFloat16(ushort* at) => new((Vector256.Load((uint*)at) & Vector256.Create(0xFFFF0000u)).AsSingle());

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd256 Broadcast(float value) => new(Vector256.Create(value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd256 Add(Simd256 a, Simd256 b) => new(a.value + b.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd256 MultiplyAdd(Simd256 a, Simd256 b, Simd256 acc) => new(Vector256.FusedMultiplyAdd(a.value, b.value, acc.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumOfBoth(Simd256 a, Simd256 b) => Vector256.Sum(a.value + b.value);
}

/// <summary>128-bit registers (SSE, Arm AdvSIMD), and the software fallback elsewhere.</summary>
internal readonly struct Simd128 : ISimdFloat<Simd128>
{
    private readonly Vector128<float> value;

    private Simd128(Vector128<float> value) => this.value = value;

    /// <inheritdoc />
    public static int Lanes => Vector128<float>.Count;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd128 Load(float* at) => new(Vector128.Load(at));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd128 EvenBFloat16(ushort* at) => new((Vector128.Load((uint*)at) << 16).AsSingle());

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Simd128 OddBFloat16(ushort* at) => new((Vector128.Load((uint*)at) & Vector128.Create(0xFFFF0000u)).AsSingle());

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd128 Broadcast(float value) => new(Vector128.Create(value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd128 Add(Simd128 a, Simd128 b) => new(a.value + b.value);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Simd128 MultiplyAdd(Simd128 a, Simd128 b, Simd128 acc) => new(Vector128.FusedMultiplyAdd(a.value, b.value, acc.value));

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumOfBoth(Simd128 a, Simd128 b) => Vector128.Sum(a.value + b.value);
}

/// <summary>The widest register width this CPU accelerates, which every managed kernel uses.</summary>
internal static class SimdWidth
{
    /// <summary>512, 256 or 128.</summary>
    public static int Bits { get; } =
        Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : 128;
}
