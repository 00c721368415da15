// The half-precision GEMM's AVX-512 FP16 path (see mumu_gemm.h): for CPUs with AVX-512 FP16 and no AMX, where
// vdpbf16ps issues at a quarter of the rate of vfmadd231ps (an Emerald Rapids Xeon with AMX masked: 1.34 against 5.48
// G instructions/s a core, so the bf16 path peaks at half of sgemm) while vfmadd231ph does 32 multiply-adds
// at the rate of vfmadd231ps's 16.
//
// Numbers: f16 has 11 significant bits (bf16 8) but a range of only 2^-24 .. 65504, and vfmadd231ph rounds its
// sum to f16. So both operands are scaled by powers of two (exact) into a range where nothing overflows, and
// the f16 sums are short:
//  - W column c is stored as W[c, :] / sw[c], sw[c] = 2^(e+1) for max |W[c, :]| in [2^e, 2^(e+1)): |w| <= 1.
//  - A row r is packed per chunk of CH = 64 k as A[r, chunk] * 2^(8-e), max |A[r, chunk]| in [2^e, 2^(e+1)):
//    |a| < 2^9, so one chunk's sum of 64 products stays under 2^15.
//  - Each chunk is summed in f16 registers, then widened and added into f32 accumulators times 2^(e-8); the
//    column scales multiply the f32 sums when C is stored.
// Rounding: operands to f16 (relative 2^-11, against bf16's 2^-8), plus the f16 sums of at most 64 terms (each
// addition off by at most 2^-11 of the running sum). For random data the result is 2-4x closer to the exact
// product than the bf16 paths'; the worst case bound is looser (BF16GemmTests states both). A column or chunk
// holding inf or NaN is packed unscaled, so they reach the outputs that use them.
//
// Layout of the packed W: ceil(n/32) panels of kp16 = roundup(k, 32) rows of 32 f16 (64 bytes, one zmm), then
// roundup(n, 32) f32 column scales. Blocking as the AVX-512 bf16 path: K slices of KS k, blocks of MC rows of A
// packed row-major (f16, each twice in a 32-bit word, with their chunk scales) in the scratch, an 8 x 64
// microkernel over two adjacent panels (16 f16 zmm accumulators, A broadcast from memory, two W vectors per k;
// 8 x 32 for a last odd panel) that keeps its f32 sums for the whole slice.
#include "gemm_f16.h"
#include "mumu_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NR 32                 // panel width
#define CH 64                 // k per f16 chunk
#define KS 256                // k per slice (a multiple of CH; two panels' slices, 32 KB, stay in L1)
#define MR 8                  // microkernel rows
#define NP 2                  // panels per microkernel
#define MC (MR * 24)          // rows per packed block
#define AS (KS + 16)          // 32-bit words (one f16 twice) per packed A row (a multiple of 16: rows start on 64 bytes)
#define NCH (KS / CH)         // chunks per slice

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
static inline int kp16(int k) { return (k + 31) & ~31; }
static inline void *align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }
static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// ---- packing of W (once per weight; its largest value found with AVX-512 where the CPU has it) ----------

size_t mumu_f16_packed_bytes(int n, int k) {
    if (n <= 0 || k <= 0) return 0;
    return (size_t)ceil_div(n, NR) * kp16(k) * NR * 2 + (size_t)ceil_div(n, NR) * NR * 4;
}

static inline float *col_scales(void *packed, int n, int k) {
    return (float *)((char *)packed + (size_t)ceil_div(n, NR) * kp16(k) * NR * 2);
}

static uint32_t max_abs_bits_avx512(const float *src, int k);

// One row of W (`row`: k f32, scaled in place) into its panel column, scaled by 1/s (`tmp`: k f16 of scratch).
static void pack_row(void *packed, int n, int k, int r, float *row, uint16_t *tmp) {
    // The largest |value| as bits: at least 0x7F800000 when the row holds inf or NaN.
    uint32_t top = 0;
    if (mumu_cpu_vector_level() >= 2) {
        top = max_abs_bits_avx512(row, k);
    } else {
        for (int e = 0; e < k; e++) {
            uint32_t b = f2u(row[e]) & 0x7FFFFFFFu;
            top = b > top ? b : top;
        }
    }
    const float s = mumu_f16_scale_above(u2f(top));   // 1 for a column with inf or NaN (top >= 0x7F800000)
    col_scales(packed, n, k)[r] = s;
    const float inv = 1 / s;     // a power of two: exact
    for (int e = 0; e < k; e++) row[e] *= inv;
    mumu_f32_to_f16(row, tmp, (size_t)k);   // nearest even, subnormals kept, overflow to inf, NaN quiet
    uint16_t *dst = (uint16_t *)packed + (size_t)(r / NR) * kp16(k) * NR + (r % NR);
    for (int e = 0; e < k; e++) dst[(size_t)e * NR] = tmp[e];
}

// Packs W row by row: `load(w, r, k, row)` puts row r of W as f32 into `row`.
static void pack_rows(const void *w, int n, int k, void *packed, void (*load)(const void *, int, int, float *)) {
    size_t bytes = mumu_f16_packed_bytes(n, k);
    if (bytes == 0) return;
    memset(packed, 0, bytes);
    float *scales = col_scales(packed, n, k);
    for (int c = n; c < ceil_div(n, NR) * NR; c++) scales[c] = 1;
    float *row = malloc((size_t)k * sizeof(float));
    uint16_t *tmp = malloc((size_t)k * sizeof(uint16_t));
    if (!row || !tmp) abort();
    for (int r = 0; r < n; r++) {
        load(w, r, k, row);
        pack_row(packed, n, k, r, row, tmp);
    }
    free(row);
    free(tmp);
}

static void load_f32(const void *w, int r, int k, float *row) {
    memcpy(row, (const float *)w + (size_t)r * k, (size_t)k * sizeof(float));
}
static void load_bf16(const void *w, int r, int k, float *row) {
    mumu_bf16_to_f32((const uint16_t *)w + (size_t)r * k, row, (size_t)k);
}

void mumu_f16_pack_f32(const float *w, int n, int k, void *packed) { pack_rows(w, n, k, packed, load_f32); }
void mumu_f16_pack_bf16(const uint16_t *w, int n, int k, void *packed) { pack_rows(w, n, k, packed, load_bf16); }

float mumu_f16_packed_value(const void *packed, int n, int k, int row, int col) {
    const uint16_t *p = packed;
    uint16_t h = p[((size_t)(row / NR) * kp16(k) + col) * NR + row % NR];
    return mumu_f16_to_f32_scalar(h) * col_scales((void *)packed, n, k)[row];
}

size_t mumu_f16_gemm_scratch_bytes(void) {
    return (size_t)MC * AS * 4 + (size_t)MC * NCH * 4 + 64;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512fp16")))

static inline __mmask16 mask_n(int n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

__attribute__((target("avx512f"))) static uint32_t max_abs_bits_avx512(const float *src, int k) {
    const __m512i absm = _mm512_set1_epi32(0x7FFFFFFF);
    __m512i mx = _mm512_setzero_si512();
    for (int e = 0; e < k; e += 16)
        mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(mask_n(k - e), src + e)), absm));
    return (uint32_t)_mm512_reduce_max_epu32(mx);
}

// Rows [0, rows) of A (stride lda) at k in [kc0, kc0 + kc) into dst (row stride AS) and their chunk scales into
// sc (row stride NCH): chunk q of row r as mumu_f16_piece_words packs it (f16 scaled to |a| < 2^9, each value
// twice in a 32-bit word), sc its inverse scale. k beyond `k` (up to kc, a multiple of 32) is zero; rows beyond
// `rows` up to the next multiple of MR are zero.
TGT static void pack_a(const float *a, long lda, int rows, int k, int kc0, int kc, uint32_t *dst, float *sc) {
    const int avail = k - kc0 < kc ? k - kc0 : kc;
    const int padded = ceil_div(rows, MR) * MR;
    for (int r = 0; r < padded; r++) {
        uint32_t *d = dst + (size_t)r * AS;
        float *s = sc + (size_t)r * NCH;
        if (r >= rows) {
            memset(d, 0, (size_t)kc * 4);
            for (int q = 0; q < ceil_div(kc, CH); q++) s[q] = 0;
            continue;
        }
        const float *src = a + (size_t)r * lda + kc0;
        for (int q = 0; q * CH < kc; q++)
            s[q] = mumu_f16_piece_words(src + q * CH, avail - q * CH, kc - q * CH < CH ? kc - q * CH : CH, d + q * CH);
    }
}

// C[0..mr) x 32 np columns (masked by km) (=|+=) the product of kc k (a multiple of 32) of packed A rows (stride
// AS, chunk scales sc at stride NCH) and np adjacent W panel slices (b: 32 f16 per k; the next panel pstride f16
// on), times the column scales cs, plus bias. The f16 sums of one chunk go to f32 at its end. With np = 2 the 16
// f16 accumulators are independent enough to keep both FMA ports busy (8 are not: vfmadd231ph's latency); the 32
// f32 sums then live in L1.
TGT static inline __attribute__((always_inline)) void kernel(const int mr, const int np, int kc, const uint32_t *a,
        const float *sc, const uint16_t *b, size_t pstride, float *c, long ldc, const __mmask16 *km, int loadc,
        const float *bias, const float *cs) {
    __m512 f[MR][2 * NP];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < 2 * np; v++) f[r][v] = _mm512_setzero_ps();
    for (int q = 0; q * CH < kc; q++) {
        const int len = kc - q * CH < CH ? kc - q * CH : CH;
        __m512h acc[MR][NP];
        for (int r = 0; r < mr; r++)
            for (int p = 0; p < np; p++) acc[r][p] = _mm512_setzero_ph();
        const float *ap = (const float *)a + q * CH;
        const _Float16 *bp = (const _Float16 *)b + (size_t)q * CH * NR;
        for (int kk = 0; kk < len; kk++) {
            __m512h w[NP];
            for (int p = 0; p < np; p++) w[p] = _mm512_loadu_ph(bp + p * pstride + (size_t)kk * NR);
            for (int r = 0; r < mr; r++) {
                const __m512h x = _mm512_castps_ph(_mm512_set1_ps(ap[(size_t)r * AS + kk]));
                for (int p = 0; p < np; p++) acc[r][p] = _mm512_fmadd_ph(x, w[p], acc[r][p]);
            }
        }
        for (int r = 0; r < mr; r++) {
            const __m512 s = _mm512_set1_ps(sc[(size_t)r * NCH + q]);
            for (int p = 0; p < np; p++) {
                const __m512i bits = _mm512_castph_si512(acc[r][p]);
                f[r][2 * p] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(bits)), s, f[r][2 * p]);
                f[r][2 * p + 1] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(bits, 1)), s, f[r][2 * p + 1]);
            }
        }
    }
    for (int v = 0; v < 2 * np; v++) {
        const __m512 sv = _mm512_loadu_ps(cs + 16 * v);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(km[v], bias + 16 * v) : _mm512_setzero_ps();
        for (int r = 0; r < mr; r++) {
            float *cr = c + (size_t)r * ldc + 16 * v;
            __m512 x = _mm512_fmadd_ps(f[r][v], sv, bv);
            if (loadc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(km[v], cr));
            _mm512_mask_storeu_ps(cr, km[v], x);
        }
    }
}

#define KCASE(R) case R: if (np == 2) kernel(R, 2, kc, a, sc, b, ps, c, ldc, km, loadc, bias, cs); \
                         else kernel(R, 1, kc, a, sc, b, ps, c, ldc, km, loadc, bias, cs); break;
TGT static void kernel_rows(int mr, int np, int kc, const uint32_t *a, const float *sc, const uint16_t *b, size_t ps,
                            float *c, long ldc, const __mmask16 *km, int loadc, const float *bias, const float *cs) {
    switch (mr) {
    KCASE(1) KCASE(2) KCASE(3) KCASE(4) KCASE(5) KCASE(6) KCASE(7)
    default: KCASE(MR)
    }
}

TGT void mumu_f16_gemm_avx512(int n, int k, const float *a, long lda, const void *packed, const float *bias,
                              float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch) {
    const int kp = kp16(k);
    const uint16_t *w = packed;
    const float *scales = col_scales((void *)packed, n, k);
    uint32_t *abuf = align64(scratch);
    float *sc = (float *)(abuf + (size_t)MC * AS);
    for (int pc = 0; pc < kp; pc += KS) {
        const int kc = kp - pc < KS ? kp - pc : KS;
        const int loadc = pc > 0 || accumulate;
        for (int ic = m0; ic < m1; ic += MC) {
            const int mc = m1 - ic < MC ? m1 - ic : MC;
            pack_a(a + (size_t)ic * lda, lda, mc, k, pc, kc, abuf, sc);
            for (int jc = n0; jc < n1; jc += NP * NR) {
                const int nv = n1 - jc, np = nv > NR ? 2 : 1;
                __mmask16 km[2 * NP];
                for (int v = 0; v < 2 * NP; v++) km[v] = mask_n(nv - 16 * v);
                const float *bj = pc == 0 && bias ? bias + jc : NULL;
                const uint16_t *panel = w + ((size_t)(jc / NR) * kp + pc) * NR;
                for (int ir = 0; ir < mc; ir += MR) {
                    const int mr = mc - ir < MR ? mc - ir : MR;
                    kernel_rows(mr, np, kc, abuf + (size_t)ir * AS, sc + (size_t)ir * NCH, panel, (size_t)kp * NR,
                                c + (size_t)(ic + ir) * ldc + jc, ldc, km, loadc, bj, scales + jc);
                }
            }
        }
    }
}
#else
static uint32_t max_abs_bits_avx512(const float *src, int k) { (void)src; (void)k; return 0; }
#endif
