// Cobra.AI native CPU kernels: what .NET cannot express (it exposes no AVX512-BF16), and one loop its JIT compiles
// poorly. Three stories:
//   1. the bf16 GEMM of every bf16 CPU linear:
//      y[r, n] = bf16( Σ_k x[r, k] · w[n, k] + bias[n] )   x [rows, K] bf16, w [N, K] bf16 (nn.Linear's layout), y bf16
//   2. the vision towers' self-attention with the flash kernels' cast points (below the GEMM);
//   3. the selective scan with d_state 16, SelectiveScanCpu's operations with the states in registers (at the end).
//
// Glossary (GEMM): K = in_features, N = out_features, rows = decode rows (+ chunk positions) or a prompt's
// positions / an image's patches, MR x NR = a register tile (MR input rows x NR weight rows, one 16-lane float32
// accumulator each), row block = the rows whose inputs stay in L2 while every weight tile passes over them.
//
// Why this shape: a decode step has 1-64 rows. libtorch (oneDNN) repacks the weights per call and reaches ~45 % of
// the bf16 peak at 16 rows; a dot-product kernel over nn.Linear's own layout needs no repack: every vdpbf16ps takes
// 32 consecutive k of one input row and one weight row (16 float32 lanes, two products each). Prompt-sized inputs
// go in row blocks, each weight tile streamed (and prefetched) once per block, the tile's input rows held in
// registers: one thread 86-94 % of a core's peak at 256-729 rows, about libtorch's rate. Every output is summed the
// same way whatever the tile, block, thread or row count (one accumulator over k in steps of 32, a masked tail, one
// fixed 16-lane reduction tree, + bias, one rounding), so a row's result does not depend on its batch.
//
// No libc, no globals: built with -nostdlib (native/build.sh); the caller checks for AVX512-BF16 (CPUID) before it
// calls anything here, and splits the rows or N (the GEMM), the heads (attention) or the channels (the scan) over
// its own threads.
#include <immintrin.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))
#define KERNEL __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define INLINE static inline __attribute__((always_inline))

// Up to this many rows decoding is a pure weight stream: one weight row after another is one sequential stream,
// which the hardware prefetcher follows at the full read rate (six rows side by side read ~25 % slower).
#define SINGLE_STREAM_ROWS 1
// A row block's inputs fit in half of L2 (128-768 KB measured: 512 KB the best over the LLM's and towers' shapes).
#define ROW_BLOCK_BYTES (512 * 1024)

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

// 2^y (KernelMath.Pow2(Vector512), Cephes' exp2f: y = n + f, |f| <= 1/2, 2^f = 1 + f P(f) of degree 5), y clamped
// below at -125 so every result is a normal number, scaled by 2^n in one instruction (vscalefps; +inf past 2^128).
KERNEL INLINE __m512 pow2_ps(__m512 y)
{
    y = _mm512_max_ps(_mm512_set1_ps(-125.0f), y);
    __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(y, n);
    __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// float32 lanes -> bf16 bits, round to nearest even, NaN kept quiet: round_bf16 lane-wise (vcvtneps2bf16 would
// flush denormals, which the reference's rounding keeps).
KERNEL INLINE __m256i round_bf16_ps(__m512 value)
{
    __m512i bits = _mm512_castps_si512(value);
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)),
                                                         _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1))), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
    rounded = _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(rounded);
}

// The 16 lane sums of v[0..16) in one register, each summed exactly as GCC's _mm512_reduce_add_ps sums one vector
// (c_k = (l_k + l_k+8) + (l_k+4 + l_k+12), then (c0 + c2) + (c1 + c3)), so a tile reduced this way gives bitwise the
// sums of one reduced alone. 45 shuffles and adds instead of ~10 per vector. Lane 4r + m holds vector 4m + r.
KERNEL INLINE __m512 reduce16(const __m512* v)
{
    __m512 t[8], u[4], w[2];
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++)                                                 // l + l+8: [v2p | v2p+1], 8 lanes each
        t[p] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0x44), _mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0xEE));
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)                                                 // + l+4: 128-bit lane r holds v(4q + r)
        u[q] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * q], t[2 * q + 1], 0x88), _mm512_shuffle_f32x4(t[2 * q], t[2 * q + 1], 0xDD));
#pragma GCC unroll 2
    for (int s = 0; s < 2; s++)                                                 // + l+2, then the last pair
        w[s] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * s], u[2 * s + 1], 0x44), _mm512_shuffle_ps(u[2 * s], u[2 * s + 1], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
}

// Where a tile's outputs go and what follows the linear's own rounding, each step on bf16 values with its own
// rounding, as the reference runs them as separate bf16 ops: × gamma[n] (LayerScale), + residual[r, n] (a block's
// residual add).
// Zeroed fields: the plain linear. at(o, r, n) is the descriptor of output (r, n).
typedef struct
{
    uint16_t* y; long ldy;                                                      // output [rows, N]
    const uint16_t* bias;                                                       // [N] or none
    const uint16_t* gamma;                                                      // [N] or none
    const uint16_t* residual; long ldr;                                         // [rows, N] or none
} out_t;

INLINE out_t at(out_t o, long r, long n)
{
    o.y += r * o.ldy + n;
    if (o.bias) o.bias += n;
    if (o.gamma) o.gamma += n;
    if (o.residual) o.residual += r * o.ldr + n;
    return o;
}

KERNEL INLINE __m512 widen_bf16_ps(__m256i bits) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)); }

// Sums (+ bias) -> bf16 bits, then the epilogue: lanes' gamma and residual values given (unused when absent).
KERNEL INLINE __m256i finish(__m512 sums, const out_t* o, __m512 gamma, __m512 residual)
{
    __m256i bits = round_bf16_ps(sums);                                         // the linear's output
    if (o->gamma) bits = round_bf16_ps(_mm512_mul_ps(widen_bf16_ps(bits), gamma));
    if (o->residual) bits = round_bf16_ps(_mm512_add_ps(residual, widen_bf16_ps(bits)));
    return bits;
}

// Six bf16 of row a at lanes 0-5 and of row b at lanes 8-13 (the 4 x 6 tile's lane layout for one row pair).
KERNEL INLINE __m512 six_and_six(const uint16_t* a, const uint16_t* b)
{
    return widen_bf16_ps(_mm256_mask_loadu_epi16(_mm256_maskz_loadu_epi16(0x003F, a), 0x3F00, b - 8));
}

// A 4 x 6 tile's sums + bias, rounded, the epilogue, stored: rows 2g and 2g+1 take lanes 0-5 and 8-13 of reduction g.
KERNEL INLINE void store_4x6(__m512 acc[4][6], const out_t* o)
{
    __m512 bias = o->bias ? six_and_six(o->bias, o->bias) : _mm512_setzero_ps();
    __m512 gamma = o->gamma ? six_and_six(o->gamma, o->gamma) : _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++)
    {
        __m512 v[16];
#pragma GCC unroll 16
        for (int k = 0; k < 16; k++)
        {
            int slot = 4 * (k % 4) + k / 4;                                    // vector 4m + r comes out in lane 4r + m
            int row = 2 * g + slot / 8, col = slot % 8;
            v[k] = col < 6 ? acc[row][col] : _mm512_setzero_ps();
        }
        __m512 sums = reduce16(v);
        if (o->bias) sums = _mm512_add_ps(sums, bias);
        __m512 residual = o->residual ? six_and_six(o->residual + 2 * g * o->ldr, o->residual + (2 * g + 1) * o->ldr) : _mm512_setzero_ps();
        __m256i bits = finish(sums, o, gamma, residual);
        // Six values a row as one 8-byte and one 4-byte store (masked stores are slow on some cores).
        __m128i first = _mm256_castsi256_si128(bits), second = _mm256_extracti128_si256(bits, 1);
        uint16_t* y0 = o->y + 2 * g * o->ldy, * y1 = y0 + o->ldy;
        _mm_storel_epi64((__m128i*)y0, first);
        _mm_storeu_si32(y0 + 4, _mm_srli_si128(first, 8));
        _mm_storel_epi64((__m128i*)y1, second);
        _mm_storeu_si32(y1 + 4, _mm_srli_si128(second, 8));
    }
}

// One output of a smaller tile: the same steps on one lane.
KERNEL INLINE void store_one(__m512 acc, const out_t* o, long i, long j)
{
    float sum = _mm512_reduce_add_ps(acc);
    if (o->bias) sum += widen_bf16(o->bias[j]);
    __m512 gamma = _mm512_set1_ps(o->gamma ? widen_bf16(o->gamma[j]) : 0.0f);
    __m512 residual = _mm512_set1_ps(o->residual ? widen_bf16(o->residual[i * o->ldr + j]) : 0.0f);
    o->y[i * o->ldy + j] = (uint16_t)_mm256_extract_epi16(finish(_mm512_set1_ps(sum), o, gamma, residual), 0);
}

// One MR x NR tile: rows x[0..MR) · weight rows w[0..NR), written through o. Two schedules of the same sums
// (every accumulator takes the same dot products in the same order, so the results are identical): with
// `inputs_held` the tile's input rows stay in registers and each weight row is loaded as it is used, the
// compute-bound schedule of a weight tile that many row tiles pass over (GCC spilled two of the 24 sums in the
// other one: in_proj, one thread, 32 rows 162 -> 200, 256 rows ~81 -> 91 % of the peak); without it the six
// weight rows load first, the memory-bound schedule of a weight tile that only one or two row tiles use (the
// loads in flight together: in_proj at 4 rows 1.9 ms, held inputs 2.7 ms).
KERNEL INLINE void tile(const uint16_t* x, long ldx, const uint16_t* w, long k, const out_t* o,
                        const int mr, const int nr, const char* ahead, long ahead_lines, const int inputs_held)
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
        if (inputs_held)
        {
            // The input rows in registers, each weight row loaded as it is used: 24 + 4 + 1 live registers.
            __m512bh xv[4];                                                     // 32 bf16 of each input row
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) xv[i] = (__m512bh)_mm512_loadu_si512(x + i * ldx + p);
            for (long q = 0; q < per_step && ahead < ahead_end; q++, ahead += 64) _mm_prefetch(ahead, _MM_HINT_T1);
#pragma GCC unroll 6
            for (int j = 0; j < nr; j++)
            {
                __m512bh wv = (__m512bh)_mm512_loadu_si512(w + j * k + p);     // 32 bf16 of weight row j
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv[i], wv);
            }
        }
        else
        {
            // The six weight rows loaded up front, then one input row at a time: 24 + 6 + 1 live registers.
            __m512bh wv[6];                                                     // 32 bf16 of each weight row
#pragma GCC unroll 6
            for (int j = 0; j < nr; j++) wv[j] = (__m512bh)_mm512_loadu_si512(w + j * k + p);
            for (long q = 0; q < per_step && ahead < ahead_end; q++, ahead += 64) _mm_prefetch(ahead, _MM_HINT_T1);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++)
            {
                __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i * ldx + p);  // 32 bf16 of input row i
#pragma GCC unroll 6
                for (int j = 0; j < nr; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
            }
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

    if (mr == 4 && nr == 6)                                                     // the full tile: 16 sums per reduction
    {
        store_4x6(acc, o);
        return;
    }

#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++) store_one(acc[i][j], o, i, j);
}

// NR weight rows · every input row, MR rows at a time: the weight tile is read from memory once and stays in
// L1 / L2 while every row block passes over it (the inputs, a few KB a row, stay in L2 across tiles).
// `next` = the weight rows of the tile after this one (prefetched in shares, one per row block).
KERNEL INLINE void columns(const uint16_t* x, long ldx, const uint16_t* w, long k, out_t o, long rows, const int nr, long next_rows)
{
    const char* next = (const char*)(w + nr * k);
    long lines = next_rows * k * 2 / 64, blocks = (rows + 3) / 4, r = 0;
    for (long block = 0; block < blocks; block++, r += 4)
    {
        const char* ahead = next + block * lines / blocks * 64;
        long share = (block + 1) * lines / blocks - block * lines / blocks;
        out_t here = at(o, r, 0);
        switch ((rows - r < 4 ? rows - r : 4) + (blocks > 2 ? 4 : 0))
        {
            case 8: tile(x + r * ldx, ldx, w, k, &here, 4, nr, ahead, share, 1); break;
            case 4: tile(x + r * ldx, ldx, w, k, &here, 4, nr, ahead, share, 0); break;
            case 7: case 3: tile(x + r * ldx, ldx, w, k, &here, 3, nr, ahead, share, 0); break;
            case 6: case 2: tile(x + r * ldx, ldx, w, k, &here, 2, nr, ahead, share, 0); break;
            default: tile(x + r * ldx, ldx, w, k, &here, 1, nr, ahead, share, 0); break;
        }
    }
}

// Columns [n0, n1) of `rows` rows (at most one row block).
KERNEL INLINE void row_block(const uint16_t* x, long ldx, const uint16_t* w, long k, out_t o, long rows, long n0, long n1)
{
    long n = n0;
    if (rows <= SINGLE_STREAM_ROWS)                                             // weight rows one by one: one stream
    {
        for (; n < n1; n++) columns(x, ldx, w + n * k, k, at(o, 0, n), rows, 1, 0);
        return;
    }

    for (; n + 6 <= n1; n += 6) columns(x, ldx, w + n * k, k, at(o, 0, n), rows, 6, n1 - n - 6 < 6 ? n1 - n - 6 : 6);
    for (; n + 2 <= n1; n += 2) columns(x, ldx, w + n * k, k, at(o, 0, n), rows, 2, 0);
    for (; n < n1; n++) columns(x, ldx, w + n * k, k, at(o, 0, n), rows, 1, 0);
}

// Output columns [n0, n1) of every row, then the epilogue (gamma, residual: either may be null);
// the caller's threads take disjoint column ranges. Rows go in blocks whose inputs fit in half of L2 (~512 KB):
// every weight tile passes over one block's rows while they stay in L2 (a prefill's 761 rows at K = 2560 are
// 3.9 MB), and the weights are streamed once per block, prefetched as before.
EXPORT KERNEL void cobra_bf16_linear(const uint16_t* x, long ldx, const uint16_t* w, long k, const uint16_t* bias,
                                     uint16_t* y, long ldy, long rows, long n0, long n1,
                                     const uint16_t* gamma, const uint16_t* residual, long ldr)
{
    if (rows <= 0 || n1 <= n0) return;                                          // an empty share of the work
    out_t o = { y, ldy, bias, gamma, residual, ldr };
    long most = ROW_BLOCK_BYTES / (2 * k), blocks = (rows + most - 1) / (most < 16 ? 16 : most);
    long block = (rows + blocks - 1) / blocks;                                  // equal blocks: no small one at the end
    block = (block + 3) / 4 * 4;
    for (long r = 0; r < rows; r += block)
        row_block(x + r * ldx, ldx, w, k, at(o, r, 0), rows - r < block ? rows - r : block, n0, n1);
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

// ---------------------------------------------------------------------------------------------------------------
// Attention for the vision towers: one head of softmax(q kᵀ · scale) v over every query row, with the cast points
// of the flash kernels under bf16 (what timm's towers run on the GPU): float32 scores times the scale, float32 row
// max, unnormalised exponentials rounded to bf16 for the value product, float32 row sum and accumulation, one
// float32 division, one rounding of the output. Like the flash kernels it takes the exponential as exp2 with log₂e
// folded into the scale. The whole row of scores is kept (n is a few hundred patches), so
// there is no running-max rescale. libtorch's CPU SDPA runs these shapes at ~125 GFLOP/s on two Zen 4 cores, a
// third of its GEMMs: its blocked kernel calls a small GEMM per block and a separate softmax pass.
//
// Glossary: n = tokens (queries = keys), hd = head dim, hp = hd rounded up to even (k pairs), kn = n rounded up to
// 16 (key lanes), vn = n rounded up to even (value-product pairs), hv = hd rounded up to 16 (output lanes).
// vdpbf16ps pairs elements 2l and 2l+1 of its operands into lane l, so both products take one operand as a
// broadcast pair (q[i, 2c..2c+1], p[i, 2j..2j+1]) and the other packed pair-interleaved: keys [hp/2][kn][2],
// values [vn/2][hv][2] (both packed per head into the caller's workspace; n·hd values, a few hundred KB).

#define ATT_MR 6                                                                // query rows per register tile
#define ATT_KV 4                                                                // 16-lane vectors per tile

INLINE long round_up(long value, long multiple) { return (value + multiple - 1) / multiple * multiple; }

INLINE __mmask16 lanes_below(long count) { return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1); }

// Both products of attention: acc[i][j] = Σ_c pair(a row i, c) · b[c][16j .. 16j + 16) over `steps` pair steps, for
// `mr` rows a + i·lda (bf16 pairs as 32-bit words, broadcast) and `kv` 16-lane vectors of b (pair-interleaved, step
// stride ldb words).
KERNEL INLINE void pair_tile(const uint32_t* a, long lda, const uint32_t* b, long ldb, long steps,
                             __m512 acc[ATT_MR][ATT_KV], const int mr, const int kv)
{
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < kv; j++) acc[i][j] = _mm512_setzero_ps();
    for (long c = 0; c < steps; c++)
    {
        __m512bh bv[ATT_KV];
#pragma GCC unroll 4
        for (int j = 0; j < kv; j++) bv[j] = (__m512bh)_mm512_loadu_si512(b + c * ldb + 16 * j);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++)
        {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[i * lda + c]);
#pragma GCC unroll 4
            for (int j = 0; j < kv; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
        }
    }
}

// Scores of `mr` query rows (pairs in qt, [mr][hp/2]) against keys [j0, j0 + 16·kv): s = (q · k) · scale, in log2
// units (scale = 1/√hd · log₂e, as the flash kernels fold it into their exp2); `best` keeps each row's running max
// over the n real keys.
KERNEL INLINE void score_tile(const uint32_t* qt, long pairs, const uint32_t* keys, long kn, long n, long j0, float scale,
                              float* s, long lds, __m512* best, const int mr, const int kv)
{
    __m512 acc[ATT_MR][ATT_KV];
    pair_tile(qt, pairs, keys + j0, kn, pairs, acc, mr, kv);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < kv; j++)
        {
            __m512 scaled = _mm512_mul_ps(acc[i][j], _mm512_set1_ps(scale));
            _mm512_storeu_ps(s + i * lds + j0 + 16 * j, scaled);
            best[i] = _mm512_mask_max_ps(best[i], lanes_below(n - j0 - 16 * j), best[i], scaled);
        }
}

// o[i, c0 + 16·v + l] = (Σ_j p[i, j] · v[j, ·]) / l[i] for `mr` rows and `vv` output vectors, rounded to bf16.
KERNEL INLINE void value_tile(const uint16_t* p, long ldp, long pairs, const uint32_t* values, long hv, long c0,
                              const float* sums, uint16_t* out, long ldo, long hd, const int mr, const int vv)
{
    __m512 acc[ATT_MR][ATT_KV];
    pair_tile((const uint32_t*)p, ldp / 2, values + c0, hv, pairs, acc, mr, vv); // ldp (= vn) is even
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int v = 0; v < vv; v++)
        {
            long c = c0 + 16 * v;
            __m256i bits = round_bf16_ps(_mm512_div_ps(acc[i][v], _mm512_set1_ps(sums[i])));
            if (c + 16 <= hd) _mm256_storeu_si256((__m256i*)(out + i * ldo + c), bits);
            else _mm256_mask_storeu_epi16(out + i * ldo + c, lanes_below(hd - c), bits);
        }
}

#define ATT_TILES(call, mr, n)                                                  \
    switch (n) { case 4: call(mr, 4); break; case 3: call(mr, 3); break; case 2: call(mr, 2); break; default: call(mr, 1); break; }

// `mr` query rows: scores against every key, the row softmax's exponentials and sums, the value product.
KERNEL INLINE void query_rows(const uint16_t* q, long ld, long n, long hd, float scale, const uint32_t* keys,
                              const uint32_t* values, uint32_t* qt, float* s, uint16_t* p, float* sums,
                              uint16_t* out, long ldo, const int mr)
{
    long pairs = round_up(hd, 2) / 2, kn = round_up(n, 16), vn = round_up(n, 2), hv = round_up(hd, 16);
    for (int i = 0; i < mr; i++)                                                // 1. the rows' q pairs (odd hd: zero-padded)
        for (long c = 0; c < pairs; c++)
            qt[i * pairs + c] = (uint32_t)q[i * ld + 2 * c] | (2 * c + 1 < hd ? (uint32_t)q[i * ld + 2 * c + 1] << 16 : 0u);

    __m512 best[ATT_MR];
    for (int i = 0; i < mr; i++) best[i] = _mm512_set1_ps(-__builtin_inff());
    for (long j0 = 0; j0 < kn; j0 += 16 * ATT_KV)                               // 2. scores, float32, times the scale
    {
        long left = (kn - j0) / 16 < ATT_KV ? (kn - j0) / 16 : ATT_KV;
#define SCORES(m, k) score_tile(qt, pairs, keys, kn, n, j0, scale, s, kn, best, m, k)
        ATT_TILES(SCORES, mr, left)
#undef SCORES
    }

    for (int i = 0; i < mr; i++)                                                // 3. e = 2^(s − max s), l = Σ e, p = bf16(e)
    {
        const float* row = s + i * kn;
        __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(best[i])), total = _mm512_setzero_ps();
        uint16_t* prow = p + i * vn;
        // vcvtneps2bf16 rounds to nearest even and flushes only denormals, which e (>= 2^-125.5) never is. Whole
        // vectors take plain loads and stores (masked stores are slow on some cores); the ragged end is masked.
        long j = 0;
        for (; j + 16 <= n; j += 16)
        {
            __m512 e = pow2_ps(_mm512_sub_ps(_mm512_loadu_ps(row + j), top));
            total = _mm512_add_ps(total, e);
            _mm256_storeu_si256((__m256i*)(prow + j), (__m256i)_mm512_cvtneps_pbh(e));
        }
        if (j < n)
        {
            __mmask16 live = lanes_below(n - j);
            __m512 e = pow2_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, row + j), top));
            total = _mm512_mask_add_ps(total, live, total, e);
            _mm256_mask_storeu_epi16(prow + j, live, (__m256i)_mm512_cvtneps_pbh(e));
        }
        if (vn > n) prow[n] = 0;                                                // the odd key's pair partner
        sums[i] = _mm512_reduce_add_ps(total);
    }

    for (long c0 = 0; c0 < hv; c0 += 16 * ATT_KV)                               // 4. o = (p · v) / l, rounded once
    {
        long left = (hv - c0) / 16 < ATT_KV ? (hv - c0) / 16 : ATT_KV;
#define VALUES(m, k) value_tile(p, vn, vn / 2, values, hv, c0, sums, out, ldo, hd, m, k)
        ATT_TILES(VALUES, mr, left)
#undef VALUES
    }
}

// Bytes of workspace one cobra_bf16_attention call needs for n tokens of head dim hd (64-byte aligned parts).
EXPORT long cobra_bf16_attention_workspace(long n, long hd)
{
    long hp = round_up(hd, 2), kn = round_up(n, 16), vn = round_up(n, 2), hv = round_up(hd, 16);
    return round_up(hp * kn * 2, 64) + round_up(vn * hv * 2, 64) + round_up(ATT_MR * hp * 2, 64)
         + round_up(ATT_MR * kn * 4, 64) + round_up(ATT_MR * vn * 2, 64) + round_up(ATT_MR * 4, 64) + 64;
}

// One head: q, k, v [n, hd] with row stride ld (elements; e.g. the rows of a qkv projection), out [n, hd] with row
// stride ldo. `workspace` holds cobra_bf16_attention_workspace(n, hd) bytes, this call's alone.
EXPORT KERNEL void cobra_bf16_attention(const uint16_t* q, const uint16_t* k, const uint16_t* v, long ld,
                                        uint16_t* out, long ldo, long n, long hd, float scale, void* workspace)
{
    long hp = round_up(hd, 2), kn = round_up(n, 16), vn = round_up(n, 2), hv = round_up(hd, 16);
    char* at = (char*)round_up((long)workspace, 64);
    uint32_t* keys = (uint32_t*)at;   at += round_up(hp * kn * 2, 64);          // [hp/2][kn] pairs
    uint32_t* values = (uint32_t*)at; at += round_up(vn * hv * 2, 64);          // [vn/2][hv] pairs
    uint32_t* qt = (uint32_t*)at;     at += round_up(ATT_MR * hp * 2, 64);      // [MR][hp/2] pairs
    float* s = (float*)at;            at += round_up(ATT_MR * kn * 4, 64);      // [MR][kn]
    uint16_t* p = (uint16_t*)at;      at += round_up(ATT_MR * vn * 2, 64);      // [MR][vn]
    float* sums = (float*)at;                                                   // [MR]

    // Keys: row j's pairs are its bf16 values read as 32-bit words; keys[c][j] is word c of row j (a transpose).
    long whole = hd / 2;                                                        // pairs with both halves in the row
    for (long j = 0; j < n; j++)
    {
        const uint16_t* row = k + j * ld;
        for (long c = 0; c < whole; c++)
        {
            uint32_t pair;
            __builtin_memcpy(&pair, row + 2 * c, sizeof pair);
            keys[c * kn + j] = pair;
        }
        if (whole < hp / 2) keys[whole * kn + j] = row[hd - 1];                 // odd hd: the last value, zero partner
    }
    for (long c = 0; c < hp / 2; c++)
        for (long j = n; j < kn; j++) keys[c * kn + j] = 0u;                    // padding keys score 0 and are masked

    // Values: rows 2j and 2j+1 interleaved, 16 columns at a time (the last row pair and columns past hd zero).
    for (long j = 0; j < vn / 2; j++)
    {
        const uint16_t* even = v + 2 * j * ld;
        const uint16_t* odd = 2 * j + 1 < n ? even + ld : 0;
        for (long c = 0; c < hv; c += 16)
        {
            __mmask16 live = lanes_below(hd - c);
            __m512i low = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(live, even + c));
            __m512i high = odd ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(live, odd + c)) : _mm512_setzero_si512();
            _mm512_storeu_si512(values + j * hv + c, _mm512_or_si512(low, _mm512_slli_epi32(high, 16)));
        }
    }

    scale *= 1.44269504088896341f;                                              // scores in log2 units: e^x = 2^(x log₂e)
    long i = 0;
    for (; i + ATT_MR <= n; i += ATT_MR)
        query_rows(q + i * ld, ld, n, hd, scale, keys, values, qt, s, p, sums, out + i * ldo, ldo, ATT_MR);
    switch (n - i)
    {
        case 5: query_rows(q + i * ld, ld, n, hd, scale, keys, values, qt, s, p, sums, out + i * ldo, ldo, 5); break;
        case 4: query_rows(q + i * ld, ld, n, hd, scale, keys, values, qt, s, p, sums, out + i * ldo, ldo, 4); break;
        case 3: query_rows(q + i * ld, ld, n, hd, scale, keys, values, qt, s, p, sums, out + i * ldo, ldo, 3); break;
        case 2: query_rows(q + i * ld, ld, n, hd, scale, keys, values, qt, s, p, sums, out + i * ldo, ldo, 2); break;
        case 1: query_rows(q + i * ld, ld, n, hd, scale, keys, values, qt, s, p, sums, out + i * ldo, ldo, 1); break;
        default: break;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The selective scan for d_state = 16 (SelectiveScanCpu's kernel, the same operations lane for lane, so the same
// results bit for bit): one block of 16 channels walks the sequence with its 16 states in registers. The managed
// kernel computes the same, but the JIT keeps the states and partial sums on the stack, with address arithmetic
// around every access (64 layers x 256 positions, 2 Zen 4 cores: 315-459 ms here, 509-921 managed). Every step
// below is the managed one's (KernelMath's Exp, Log, Pow2, Softplus, Silu; x86 min/max operand order included, no
// contraction of a product and a sum into one FMA: built with -std=c11, whose default is -ffp-contract=off).
//
// Glossary: L = positions, D = channels (d_inner), N = 16 states, Δ (delta) before its bias and softplus,
// x̃ (u) the conv output, z the gate (rows zstride apart), B/C [L, N] float32, A [D, N] float32, h [D, N] float32.

KERNEL INLINE __m512 exp_ps(__m512 x)                                          // KernelMath.Exp
{
    x = _mm512_min_ps(_mm512_set1_ps(88.72283f), _mm512_max_ps(_mm512_set1_ps(-87.33654f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 two_to_n = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
    return _mm512_mul_ps(p, two_to_n);
}

KERNEL INLINE __m512 log_ps(__m512 x)                                          // KernelMath.Log
{
    __m512i bits = _mm512_castps_si512(x);
    __m512 e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srai_epi32(bits, 23), _mm512_set1_epi32(126)));
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007FFFFF)), _mm512_set1_epi32(0x3F000000)));
    __mmask16 small = _mm512_cmp_ps_mask(m, _mm512_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm512_sub_ps(e, _mm512_maskz_mov_ps(small, _mm512_set1_ps(1.0f)));
    m = _mm512_sub_ps(_mm512_mask_blend_ps(small, m, _mm512_add_ps(m, m)), _mm512_set1_ps(1.0f));
    __m512 z = _mm512_mul_ps(m, m);
    __m512 p = _mm512_set1_ps(7.0376836292e-2f);
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps(-1.1514610310e-1f));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps(1.1676998740e-1f));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps(-1.2420140846e-1f));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps(1.4249322787e-1f));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps(-1.6668057665e-1f));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps(2.0000714765e-1f));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps(-2.4999993993e-1f));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps(3.3333331174e-1f));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, m), z);
    y = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), y);
    y = _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), y);
    return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), _mm512_add_ps(m, y));
}

KERNEL INLINE __m512 softplus_ps(__m512 v)                                     // KernelMath.Softplus, threshold 20
{
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = exp_ps(v);
    __m512 one_plus = _mm512_add_ps(one, e);
    __m512 log1p = _mm512_mul_ps(log_ps(one_plus), _mm512_div_ps(e, _mm512_sub_ps(one_plus, one)));
    log1p = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(one_plus, one, _CMP_EQ_OQ), log1p, e);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_set1_ps(20.0f), _CMP_GT_OQ), log1p, v);
}

KERNEL INLINE __m512 silu_ps(__m512 v)                                         // v / (1 + e^-v)
{
    return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), v))));
}

KERNEL INLINE __m512 load_wide(const void* data, long at, int bf16)
{
    return bf16 ? widen_bf16_ps(_mm256_loadu_si256((const __m256i*)((const uint16_t*)data + at))) : _mm512_loadu_ps((const float*)data + at);
}

KERNEL INLINE void store_narrow(__m512 value, void* data, long at, int bf16)
{
    if (bf16) _mm256_storeu_si256((__m256i*)((uint16_t*)data + at), round_bf16_ps(value));
    else _mm512_storeu_ps((float*)data + at, value);
}

// Channels [d0, d1) (whole blocks of 16) of one sequence: u, delta, out [L, D] (row = D elements), z rows zstride
// apart, bm/cm [L, 16], a [D, 16] (A, not yet times log₂e), state [D, 16] updated in place, dskip/delta_bias [D].
EXPORT KERNEL void cobra_selective_scan16(const void* u, const void* delta, const void* z, long zstride, const float* bm, const float* cm,
                                          const float* a, const float* dskip, const float* delta_bias, float* state, void* out,
                                          long length, long channels, long d0, long d1, int bf16)
{
    for (long c = d0; c + 16 <= d1; c += 16)
    {
        __m512 h[16], al[16];
        __m512i lane = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(16));
#pragma GCC unroll 16
        for (int n = 0; n < 16; n++)                                           // state n of the block's channels: stride 16
        {
            h[n] = _mm512_i32gather_ps(lane, state + c * 16 + n, 4);
            al[n] = _mm512_mul_ps(_mm512_i32gather_ps(lane, a + c * 16 + n, 4), _mm512_set1_ps(1.44269504088896341f));
        }

        __m512 d_skip = _mm512_loadu_ps(dskip + c), bias = _mm512_loadu_ps(delta_bias + c);
        for (long t = 0; t < length; t++)
        {
            long row = t * channels + c;
            __m512 dt = softplus_ps(_mm512_add_ps(load_wide(delta, row, bf16), bias));    // Δ_t
            __m512 x = load_wide(u, row, bf16);                                          // x̃_t
            __m512 dtx = _mm512_mul_ps(dt, x);
            const float* bt = bm + t * 16, * ct = cm + t * 16;
            __m512 acc[4];
#pragma GCC unroll 16
            for (int n = 0; n < 16; n++)                                       // h = 2^(Δ A log₂e) h + (Δ x̃) B; y = C·h in 4 sums
            {
                h[n] = _mm512_fmadd_ps(pow2_ps(_mm512_mul_ps(dt, al[n])), h[n], _mm512_mul_ps(dtx, _mm512_set1_ps(bt[n])));
                acc[n % 4] = n < 4 ? _mm512_fmadd_ps(h[n], _mm512_set1_ps(ct[n]), _mm512_setzero_ps()) : _mm512_fmadd_ps(h[n], _mm512_set1_ps(ct[n]), acc[n % 4]);
            }

            __m512 y = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            __m512 gate = load_wide(z, t * zstride + c, bf16);
            store_narrow(_mm512_mul_ps(_mm512_add_ps(y, _mm512_mul_ps(d_skip, x)), silu_ps(gate)), out, row, bf16);
        }

#pragma GCC unroll 16
        for (int n = 0; n < 16; n++) _mm512_i32scatter_ps(state + c * 16 + n, lane, h[n], 4);
    }
}
