// Cobra.AI native CPU kernels: the bf16 GEMM that .NET cannot express (it exposes no AVX512-BF16).
//
// y[r, n] = bf16( Σ_k x[r, k] · w[n, k] + bias[n] )   x [rows, K] bf16, w [N, K] bf16 (nn.Linear's layout), y bf16
//
// Glossary: K = in_features, N = out_features, rows = decode rows (+ chunk positions), MR x NR = a register tile
// (MR input rows x NR weight rows, one 16-lane float32 accumulator each).
//
// Why this shape: a decode step has 1-64 rows. libtorch (oneDNN) repacks the weights per call and reaches ~45 % of
// the bf16 peak at 16 rows; a dot-product kernel over nn.Linear's own layout needs no repack: every vdpbf16ps takes
// 32 consecutive k of one input row and one weight row (16 float32 lanes, two products each). Every output is
// summed the same way whatever the tile, panel, thread or row count (one accumulator over k in steps of 32, a
// masked tail, one fixed 16-lane reduction, + bias, one rounding), so a row's result does not depend on its batch.
//
// No libc, no globals: built with -nostdlib (tools/build-native-kernels.sh); the caller checks for AVX512-BF16
// (CPUID) before it calls anything here, and splits N over its own threads.
#include <immintrin.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))
#define KERNEL __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define INLINE static inline __attribute__((always_inline))

// Up to this many rows decoding is a pure weight stream: one weight row after another is one sequential stream,
// which the hardware prefetcher follows at the full read rate (six rows side by side read ~25 % slower).
#define SINGLE_STREAM_ROWS 1

// float32 -> bf16 bits, round to nearest even, NaN kept quiet (as c10::BFloat16 rounds).
INLINE uint16_t round_bf16(float value)
{
    union { float f; uint32_t u; } bits = { value };
    if ((bits.u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((bits.u >> 16) | 0x40);
    return (uint16_t)((bits.u + 0x7FFFu + ((bits.u >> 16) & 1u)) >> 16);
}

INLINE float widen_bf16(uint16_t bits)
{
    union { uint32_t u; float f; } value = { (uint32_t)bits << 16 };
    return value.f;
}

// One MR x NR tile: rows x[0..MR) · weight rows w[0..NR), written to y (row stride ldy) with bias b (or none).
KERNEL INLINE void tile(const uint16_t* x, long ldx, const uint16_t* w, long k, const uint16_t* b,
                        uint16_t* y, long ldy, const int mr, const int nr, const char* ahead, long ahead_lines)
{
    // Prefetch the next weight tile into L2 while this one computes: memory and compute then overlap instead of
    // taking turns (the hardware prefetcher, following six streams, does not run far enough ahead).
    long body_steps = k / 32 + 1, per_step = (ahead_lines + body_steps - 1) / body_steps;
    const char* ahead_end = ahead + ahead_lines * 64;
    __m512 acc[4][6];                                                           // [MR][NR] 16 lanes each
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++) acc[i][j] = _mm512_setzero_ps();

    long body = k / 32 * 32;
    for (long p = 0; p < body; p += 32)
    {
        __m512bh wv[6];                                                         // 32 bf16 of each weight row
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++) wv[j] = (__m512bh)_mm512_loadu_si512(w + j * k + p);
        for (long q = 0; q < per_step && ahead < ahead_end; q++, ahead += 64) _mm_prefetch(ahead, _MM_HINT_T1);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++)
        {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i * ldx + p);      // 32 bf16 of input row i
#pragma GCC unroll 6
            for (int j = 0; j < nr; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
        }
    }

    if (body < k)                                                               // k % 32 tail, zero-masked
    {
        __mmask32 mask = (__mmask32)((1ull << (k - body)) - 1);
        __m512bh wv[6];
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++) wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + j * k + body);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++)
        {
            __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mask, x + i * ldx + body);
#pragma GCC unroll 6
            for (int j = 0; j < nr; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
        }
    }

#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
        {
            float sum = _mm512_reduce_add_ps(acc[i][j]);
            if (b) sum += widen_bf16(b[j]);
            y[i * ldy + j] = round_bf16(sum);
        }
}

// NR weight rows · every input row, MR rows at a time: the weight tile is read from memory once and stays in
// L1 / L2 while every row block passes over it (the inputs, a few KB a row, stay in L2 across tiles).
// `next` = the weight rows of the tile after this one (prefetched in shares, one per row block).
KERNEL INLINE void columns(const uint16_t* x, long ldx, const uint16_t* w, long k, const uint16_t* b,
                           uint16_t* y, long ldy, long rows, const int nr, long next_rows)
{
    const char* next = (const char*)(w + nr * k);
    long lines = next_rows * k * 2 / 64, blocks = (rows + 3) / 4, r = 0;
    for (long block = 0; block < blocks; block++, r += 4)
    {
        const char* ahead = next + block * lines / blocks * 64;
        long share = (block + 1) * lines / blocks - block * lines / blocks;
        switch (rows - r < 4 ? rows - r : 4)
        {
            case 4: tile(x + r * ldx, ldx, w, k, b, y + r * ldy, ldy, 4, nr, ahead, share); break;
            case 3: tile(x + r * ldx, ldx, w, k, b, y + r * ldy, ldy, 3, nr, ahead, share); break;
            case 2: tile(x + r * ldx, ldx, w, k, b, y + r * ldy, ldy, 2, nr, ahead, share); break;
            default: tile(x + r * ldx, ldx, w, k, b, y + r * ldy, ldy, 1, nr, ahead, share); break;
        }
    }
}

// Output columns [n0, n1) of every row; the caller's threads take disjoint column ranges.
EXPORT KERNEL void cobra_bf16_linear(const uint16_t* x, long ldx, const uint16_t* w, long k, const uint16_t* bias,
                                     uint16_t* y, long ldy, long rows, long n0, long n1)
{
    long n = n0;
    if (rows <= SINGLE_STREAM_ROWS)                                             // weight rows one by one: one stream
    {
        for (; n < n1; n++) columns(x, ldx, w + n * k, k, bias ? bias + n : 0, y + n, ldy, rows, 1, 0);
        return;
    }

    for (; n + 6 <= n1; n += 6) columns(x, ldx, w + n * k, k, bias ? bias + n : 0, y + n, ldy, rows, 6, n1 - n - 6 < 6 ? n1 - n - 6 : 6);
    for (; n + 2 <= n1; n += 2) columns(x, ldx, w + n * k, k, bias ? bias + n : 0, y + n, ldy, rows, 2, 0);
    for (; n < n1; n++) columns(x, ldx, w + n * k, k, bias ? bias + n : 0, y + n, ldy, rows, 1, 0);
}

// The bf16 peak probe: 12 independent vdpbf16ps chains on registers (64 FLOPs each), `iterations` times.
// Returns a value that depends on every chain so the loop cannot be dropped.
EXPORT KERNEL float cobra_bf16_peak(long iterations)
{
    __m512 acc[12];
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F803F80), c = (__m512bh)_mm512_set1_epi32(0x3A803A80);
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long t = 0; t < iterations; t++)
    {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, c);
        __asm__ volatile("" : "+v"(a), "+v"(c));
    }
    __m512 sum = acc[0];
#pragma GCC unroll 11
    for (int i = 1; i < 12; i++) sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}
