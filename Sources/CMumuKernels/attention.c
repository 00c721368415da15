// Fused scaled dot-product attention (see mumu_attention.h).
//
// Blocking: a call takes its query rows BQ = 48 at a time (one block of Q copied, bf16-rounded for bf16, into the
// scratch); K and V of the kv head were packed once (mumu_attention_pack_kv) in blocks of BK = 64 keys, K
// transposed per block ([d][64] f32, or [d/2 pairs][64] 32-bit words holding bf16 pairs for bf16) and V row-major
// with the channels padded to a multiple of 16 ([64][d16] f32, or [32 key pairs][d16] words for bf16). Per key
// block that the masks leave visible to the block of rows:
//   S[48][64] = Q · Kᵀ               (f32 accumulation)
//   online softmax per row: m' = max(m, max_j S·scale), alpha = e^(m - m'), P = e^(S·scale - m') (zero where
//   masked), l = l·alpha + Σ P, O *= alpha          (f32; P rounded to bf16 for the bf16 paths)
//   O[48][d16] += P · V
// and at the end out = O / l. S, P and O (48 x 64, 48 x 64, 48 x d16 floats) stay in L1/L2; Tq x Tk scores are
// never formed. Key blocks entirely masked for the block of rows (causal, sliding window) are skipped.
// Kernels per path:
//   AVX-512 f32: S in 6-row x 64-key tiles (24 zmm accumulators, one broadcast of q per row and 4 loads of Kᵀ
//     per channel); PV in 6-row x 64-channel tiles (per key 4 loads of V and 6 broadcasts of P).
//   AVX-512 bf16: the same tiles with vdpbf16ps over channel pairs (S) and key pairs (PV).
//   AVX2 + FMA: S in register tiles of 6 rows x 16 keys (f32: 12 ymm accumulators, per channel two loads of Kᵀ
//     and six broadcasts of q) or 4 rows x 16 keys (bf16: each K word widened to its two f32 channels in
//     registers, two FMAs per word, q broadcast from its bf16-rounded f32 copy); PV in 6-row x 16-channel (f32)
//     or 4-row x 16-channel tiles (bf16: V words widened likewise, P broadcast from its rounded f32 copy in S).
//   AMX: S as 16-row x 64-key (four C tiles, A = 16 rows x 16 channel pairs of Q, B = 16 pairs x 16 keys of Kᵀ);
//     PV as 16-row x 64-channel (four C tiles loaded from O and stored back, A = 16 rows x 16 key pairs of P,
//     B = 16 key pairs x 16 channels of V). Softmax on AVX-512.
//   portable: the same blocks in scalar C (bf16 rounding emulated), for CPUs without AVX-512 and for tests.
#include "mumu_attention.h"
#include "mumu_gemm.h"
#include "gemm_f16.h"
#include "mumu_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include "amx_tiles.h"
#include "simd_math.h"
#define MUMU_X86 1
#endif

#define BQ 48   // query rows per block (multiple of MR and of 16)
#define BK 64   // keys per block
#define MR 6    // rows per AVX-512 micro-tile

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
static inline int round_up(int a, int b) { return ceil_div(a, b) * b; }
static inline void *align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t f32_to_bf16(float f) {
    uint32_t x = f2u(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x0040);
    x += 0x7FFF + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
static inline float bf_lo(uint32_t w) { return u2f(w << 16); }
static inline float bf_hi(uint32_t w) { return u2f(w & 0xFFFF0000u); }

// Shape-derived sizes.
// d16: the row stride of O and of packed V (channels padded to 16; to 32 for f16, a zmm of f16); dp: channel
// pairs (bf16 Q and K words); nch: 64-channel chunks (f16 Q scales).
typedef struct { int d, d16, dp, nch, nb; } dims;
static dims dims_of(const mumu_attention_args *a) {
    dims s;
    s.d = a->d;
    s.d16 = round_up(a->d, a->bf16 == MUMU_ATTENTION_F16 ? 32 : 16);
    s.dp = round_up(ceil_div(a->d, 2), 16);   // channel pairs, padded for AMX A tiles (16 pairs)
    s.nch = ceil_div(a->d, 64);
    s.nb = ceil_div(a->tk, BK);
    return s;
}

// f16 block sizes in bytes: K = Kᵀ [d][BK] f16 and the key scales [BK] f32; V = [BK][d16] f16 and the channel
// scales [d16] f32 (multiples of 64 bytes, so every block starts aligned).
static size_t k_block_f16(dims s) { return (size_t)s.d * BK * 2 + BK * 4; }
static size_t v_block_f16(dims s) { return (size_t)BK * s.d16 * 2 + (size_t)s.d16 * 4; }

// ---- paths -----------------------------------------------------------------------------------------

int mumu_attention_path_available(int path, int bf16) {
    if (path <= 0) return 1;
#ifdef MUMU_X86
    if (bf16 == MUMU_ATTENTION_F16) return path == 2 && mumu_gemm_bf16_isa_available(3);   // the GEMM's avx512fp16
    if (path == 1) return mumu_gemm_bf16_isa_available(1);                 // AVX2 + FMA, as the GEMM's avx2
    if (bf16) return mumu_gemm_bf16_isa_available(path >= 3 ? 4 : 2);   // the GEMM's avx512bf16 / amx
    return path == 2 && mumu_cpu_vector_level() >= 2;
#else
    return 0;
#endif
}

static int clamp_path(int path, int bf16) {
    if (path > 3) path = 3;
    if (bf16 != 1 && path == 3) path = 2;
    if (bf16 == MUMU_ATTENTION_F16 && path == 1) path = 0;
    while (path > 0 && !mumu_attention_path_available(path, bf16)) path--;
    return path;
}

// The GEMM's cap (0 portable, 1 avx2, 2 avx512bf16, 3 avx512fp16, 4 amx) caps the attention's path too: amx at 4,
// avx512 at 2 and 3.
int mumu_attention_path(int bf16) {
    const int cap = mumu_gemm_isa_cap();
    if (bf16 == MUMU_ATTENTION_F16) return cap >= 3 ? clamp_path(2, bf16) : 0;
    return clamp_path(cap >= 4 ? 3 : cap == 3 ? 2 : cap, bf16);
}

const char *mumu_attention_path_name(int path) {
    switch (path) {
    case 1: return "avx2";
    case 2: return "avx512";
    case 3: return "amx";
    default: return "portable";
    }
}

#ifdef MUMU_X86
static void pack_kv_bf16_avx(const mumu_attention_args *a, const float *k, const float *v, dims s, uint32_t *kp,
                             uint32_t *vp);
#endif

// ---- packing -----------------------------------------------------------------------------------------

// f16 K and V (format 2; `packed` zeroed): per block of BK keys, Kᵀ with each key divided by its scale (keys past
// Tk stay zero with scale 1), then V with each channel divided by its scale over the block's keys.
static void pack_kv_f16(const mumu_attention_args *a, const float *k, const float *v, dims s, void *packed) {
    const int d = s.d, d16 = s.d16, tk = a->tk;
    float *row = malloc((size_t)(d16 > BK ? d16 : BK) * 4 + (size_t)d16 * 4);
    uint16_t *h = malloc((size_t)d16 * 2);
    if (!row || !h) abort();
    float *mx = row + (d16 > BK ? d16 : BK);
    char *vbase = (char *)packed + (size_t)s.nb * k_block_f16(s);
    for (int kb = 0; kb < s.nb; kb++) {
        uint16_t *kt = (uint16_t *)((char *)packed + (size_t)kb * k_block_f16(s));
        float *ks = (float *)(kt + (size_t)d * BK);
        uint16_t *vt = (uint16_t *)(vbase + (size_t)kb * v_block_f16(s));
        float *vs = (float *)(vt + (size_t)BK * d16);
        const int j0 = kb * BK, jn = tk - j0 < BK ? tk - j0 : BK;
        for (int j = 0; j < BK; j++) ks[j] = 1;
        for (int c = 0; c < d16; c++) { mx[c] = 0; vs[c] = 1; }
        for (int j = 0; j < jn; j++) {
            const float *kr = k + (size_t)(j0 + j) * a->ldk, *vr = v + (size_t)(j0 + j) * a->ldv;
            float m = 0;
            for (int c = 0; c < d; c++) { float x = fabsf(kr[c]); m = x > m || x != x ? x : m; }
            ks[j] = mumu_f16_scale_above(m);
            for (int c = 0; c < d; c++) row[c] = kr[c] / ks[j];
            mumu_f32_to_f16(row, h, (size_t)d);
            for (int c = 0; c < d; c++) kt[(size_t)c * BK + j] = h[c];
            for (int c = 0; c < d; c++) { float x = fabsf(vr[c]); mx[c] = x > mx[c] || x != x ? x : mx[c]; }
        }
        for (int c = 0; c < d; c++) vs[c] = mumu_f16_scale_above(mx[c]);
        for (int j = 0; j < jn; j++) {
            const float *vr = v + (size_t)(j0 + j) * a->ldv;
            for (int c = 0; c < d; c++) row[c] = vr[c] / vs[c];
            mumu_f32_to_f16(row, vt + (size_t)j * d16, (size_t)d);
        }
    }
    free(row);
    free(h);
}

// The f16 block of Q (format 2): row r's 64-channel chunk q scaled by 2^(8-e) for max |chunk| in [2^e, 2^(e+1))
// (|q| < 2^9, as the GEMM's A), each f16 stored twice in one 32-bit word, then the inverse scales [BQ][nch].
// Rows past `rows` are zero.
#ifdef MUMU_X86
static void q_row_f16_avx(const float *src, int d, uint32_t *q, float *qs);
#endif
static void q_block_f16(const mumu_attention_args *a, dims s, int h, int ib, int rows, uint32_t *q) {
    const int d = s.d, dq = round_up(d, 16);
    float *qs = (float *)(q + (size_t)BQ * dq);
    float tmp[64];
    uint16_t hv[64];
    memset(q, 0, (size_t)BQ * dq * 4 + (size_t)BQ * s.nch * 4);
    for (int r = 0; r < rows; r++) {
        const float *src = a->q + (size_t)(ib + r) * a->ldq + (size_t)h * d;
#ifdef MUMU_X86
        if (mumu_cpu_vector_level() >= 2) { q_row_f16_avx(src, d, q + (size_t)r * dq, qs + (size_t)r * s.nch); continue; }
#endif
        for (int ch = 0; ch < s.nch; ch++) {
            const int c0 = ch * 64, n = d - c0 < 64 ? d - c0 : 64;
            float m = 0;
            for (int c = 0; c < n; c++) { float x = fabsf(src[c0 + c]); m = x > m || x != x ? x : m; }
            float mul = 1, inv = 1;
            if (m > 0 && isfinite(m)) {
                int e;
                frexpf(m, &e);                   // m in [2^(e-1), 2^e)
                e = e - 1 < -100 ? -100 : e - 1;
                mul = ldexpf(1, 8 - e);
                inv = ldexpf(1, e - 8);
            }
            for (int c = 0; c < n; c++) tmp[c] = src[c0 + c] * mul;
            mumu_f32_to_f16(tmp, hv, (size_t)n);
            for (int c = 0; c < n; c++) q[(size_t)r * dq + c0 + c] = hv[c] | (uint32_t)hv[c] << 16;
            qs[(size_t)r * s.nch + ch] = inv;
        }
    }
}

size_t mumu_attention_kv_bytes(const mumu_attention_args *a) {
    dims s = dims_of(a);
    if (a->bf16 == MUMU_ATTENTION_F16) return (size_t)s.nb * (k_block_f16(s) + v_block_f16(s));
    size_t kw = a->bf16 ? (size_t)s.dp : (size_t)s.d;         // K: rows of BK per block
    size_t vr = a->bf16 ? BK / 2 : BK;                          // V: rows per block
    return (size_t)s.nb * (kw * BK + vr * s.d16) * 4;
}

void mumu_attention_pack_kv(const mumu_attention_args *a, int g, void *packed) {
    dims s = dims_of(a);
    const int d = s.d, tk = a->tk;
    const float *k = a->k + (size_t)g * d, *v = a->v + (size_t)g * d;
    memset(packed, 0, mumu_attention_kv_bytes(a));
    if (a->bf16 == MUMU_ATTENTION_F16) {
        pack_kv_f16(a, k, v, s, packed);
    } else if (!a->bf16) {
        float *kp = packed, *vp = kp + (size_t)s.nb * d * BK;
        for (int j = 0; j < tk; j++) {
            const float *kr = k + (size_t)j * a->ldk, *vr = v + (size_t)j * a->ldv;
            float *kb = kp + (size_t)(j / BK) * d * BK + j % BK;
            for (int c = 0; c < d; c++) kb[(size_t)c * BK] = kr[c];
            memcpy(vp + (size_t)j * s.d16, vr, (size_t)d * 4);
        }
    } else {
        uint32_t *kp = packed, *vp = kp + (size_t)s.nb * s.dp * BK;
#ifdef MUMU_X86
        if (d <= 8192 && mumu_attention_path_available(2, 1)) { pack_kv_bf16_avx(a, k, v, s, kp, vp); return; }   // (stack row)
#endif
        uint16_t *vh = (uint16_t *)vp;
        for (int j = 0; j < tk; j++) {
            const float *kr = k + (size_t)j * a->ldk, *vr = v + (size_t)j * a->ldv;
            uint16_t *kb = (uint16_t *)(kp + (size_t)(j / BK) * s.dp * BK + j % BK);
            for (int c = 0; c < d; c++) kb[(size_t)(c / 2) * BK * 2 + (c & 1)] = f32_to_bf16(kr[c]);
            // V word (j/2, c) holds v[j & ~1][c] low, v[j | 1][c] high.
            uint16_t *vb = vh + (size_t)(j / 2) * s.d16 * 2 + (j & 1);
            for (int c = 0; c < d; c++) vb[(size_t)c * 2] = f32_to_bf16(vr[c]);
        }
    }
}

// The block of Q in the scratch: BQ rows of d floats (f32), dp words (bf16 paths 2-3) or 2·ceil(d/2) floats (the
// AVX2 bf16 path's rounded values, rows of even length), or, for f16, BQ rows of round_up(d, 16) words and the
// rows' chunk scales.
static size_t q_block_bytes(dims s) {
    const size_t f16 = (size_t)BQ * (round_up(s.d, 16) + s.nch) * 4;
    const size_t other = (size_t)BQ * (s.d + 1 > s.dp ? s.d + 1 : s.dp) * 4;
    return f16 > other ? f16 : other;
}

size_t mumu_attention_scratch_bytes(const mumu_attention_args *a) {
    dims s = dims_of(a);
    size_t q = q_block_bytes(s);
    size_t sc = (size_t)BQ * BK * 4, p16 = (size_t)BQ * (BK / 2) * 4, o = (size_t)BQ * s.d16 * 4, st = 2 * BQ * 4 + BQ * 64;
    return q + sc + p16 + o + st + 6 * 64;
}

// ---- portable kernels --------------------------------------------------------------------------------

typedef struct {
    int bf16, d, d16, dp, rows;   // rows: valid rows of the block (the rest are padding)
    const void *qp;               // [BQ][d] f32 or [BQ][dp] words
    float *s;                     // [BQ][BK]
    uint32_t *p16;                // [BQ][BK/2] words (bf16)
    float *o;                     // [BQ][d16]
    float *m, *l;
    float *l16;                   // [BQ][16]: the AVX-512 paths' row sums, lane-wise (reduced at the end)
} blk;

// The scalar kernels, written once and compiled twice: for any x86-64 (portable) and for AVX2 + FMA, where the
// compiler vectorizes the loops over the 64 keys of a block (S) and the channels (PV).
#define PORTABLE_KERNELS(NAME, ATTR) \
ATTR static void qk_##NAME(const blk *b, const void *kb) { \
    for (int r = 0; r < b->rows; r++) { \
        float *sr = b->s + r * BK; \
        for (int j = 0; j < BK; j++) sr[j] = 0; \
        if (!b->bf16) { \
            const float *q = (const float *)b->qp + (size_t)r * b->d, *k = kb; \
            for (int c = 0; c < b->d; c++) \
                for (int j = 0; j < BK; j++) sr[j] += q[c] * k[(size_t)c * BK + j]; \
        } else { \
            const uint32_t *q = (const uint32_t *)b->qp + (size_t)r * b->dp, *k = kb; \
            for (int p = 0; p < b->dp; p++) \
                for (int j = 0; j < BK; j++) { \
                    uint32_t kw = k[(size_t)p * BK + j]; \
                    sr[j] += bf_lo(q[p]) * bf_lo(kw) + bf_hi(q[p]) * bf_hi(kw); \
                } \
        } \
    } \
} \
 \
ATTR static void pv_##NAME(const blk *b, const void *vb, int jn) { \
    for (int r = 0; r < b->rows; r++) { \
        float *orow = b->o + (size_t)r * b->d16; \
        if (!b->bf16) { \
            const float *p = b->s + r * BK, *v = vb; \
            for (int j = 0; j < jn; j++) \
                for (int c = 0; c < b->d16; c++) orow[c] += p[j] * v[(size_t)j * b->d16 + c]; \
        } else { \
            const uint32_t *p = b->p16 + r * (BK / 2), *v = vb; \
            for (int jp = 0; jp < ceil_div(jn, 2); jp++) \
                for (int c = 0; c < b->d16; c++) { \
                    uint32_t vw = v[(size_t)jp * b->d16 + c]; \
                    orow[c] += bf_lo(p[jp]) * bf_lo(vw) + bf_hi(p[jp]) * bf_hi(vw); \
                } \
        } \
    } \
} \

PORTABLE_KERNELS(portable, )

// Format 2 (f16) where the CPU has no AVX-512 FP16: the packed f16 values, scales applied, multiplied in f32.
// S as qk_portable's; PV reads P as f32 from S (the f32 softmax's) instead of the bf16 copy.
static void qk_f16_portable(const blk *b, const void *kb) {
    const int d = b->d, dq = round_up(d, 16), nch = ceil_div(d, 64);
    const uint16_t *kt = kb;
    const float *ks = (const float *)(kt + (size_t)d * BK);
    const uint32_t *q = b->qp;
    const float *qs = (const float *)(q + (size_t)BQ * dq);
    for (int r = 0; r < b->rows; r++) {
        float *sr = b->s + r * BK;
        for (int j = 0; j < BK; j++) sr[j] = 0;
        for (int c = 0; c < d; c++) {
            const float x = mumu_f16_to_f32_scalar((uint16_t)q[(size_t)r * dq + c]) * qs[(size_t)r * nch + c / 64];
            for (int j = 0; j < BK; j++) sr[j] += x * mumu_f16_to_f32_scalar(kt[(size_t)c * BK + j]);
        }
        for (int j = 0; j < BK; j++) sr[j] *= ks[j];
    }
}

static void pv_f16_portable(const blk *b, const void *vb, int jn) {
    const int d16 = b->d16;
    const uint16_t *v = vb;
    const float *vs = (const float *)(v + (size_t)BK * d16);
    for (int r = 0; r < b->rows; r++) {
        float *orow = b->o + (size_t)r * d16;
        for (int j = 0; j < jn; j++) {
            const float p = b->s[r * BK + j];
            for (int c = 0; c < d16; c++) orow[c] += p * mumu_f16_to_f32_scalar(v[(size_t)j * d16 + c]) * vs[c];
        }
    }
}

// Visible key columns [lo, hi) of the block (clamped to [0, BK]) for each row; computed by the driver.
static void softmax_portable(const blk *b, const int *lo, const int *hi, float scale) {
    for (int r = 0; r < BQ; r++) {
        float *sr = b->s + r * BK;
        uint16_t *ph = (uint16_t *)(b->p16 + r * (BK / 2));
        if (r >= b->rows || lo[r] >= hi[r]) {
            for (int j = 0; j < BK; j++) sr[j] = 0;
            for (int j = 0; j < BK; j++) ph[j] = 0;
            continue;
        }
        float mx = -INFINITY;
        for (int j = lo[r]; j < hi[r]; j++) { float x = sr[j] * scale; mx = x > mx ? x : mx; }
        float mold = b->m[r], mnew = mold > mx ? mold : mx;
        float alpha = expf(mold - mnew), sum = 0;
        for (int j = 0; j < BK; j++) {
            float e = (j >= lo[r] && j < hi[r]) ? expf(sr[j] * scale - mnew) : 0;
            sr[j] = e;
            sum += e;
            ph[j] = f32_to_bf16(e);
        }
        b->m[r] = mnew;
        b->l[r] = b->l[r] * alpha + sum;
        if (alpha != 1) {
            float *orow = b->o + (size_t)r * b->d16;
            for (int c = 0; c < b->d16; c++) orow[c] *= alpha;
        }
    }
}

#ifdef MUMU_X86
// ---- AVX2 softmax ----------------------------------------------------------------------------------------
// The portable softmax on 8 lanes: e^x by exp256, visible columns by comparing the column index with lo / hi,
// P as f32 in S, for bf16 rounded to bf16 nearest even and kept as those f32 values (pv_avx2_bf16 broadcasts them
// from S; p16 is not used on this path. NaN cannot occur: inputs are finite scores).
__attribute__((target("avx2,fma"))) static void softmax_avx2(const blk *b, const int *lo, const int *hi, float scale) {
    const __m256 vs = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int r = 0; r < BQ; r++) {
        float *sr = b->s + r * BK;
        if (r >= b->rows || lo[r] >= hi[r]) {
            for (int q = 0; q < BK; q += 8) _mm256_storeu_ps(sr + q, _mm256_setzero_ps());
            continue;
        }
        const __m256i vlo = _mm256_set1_epi32(lo[r]), vhi = _mm256_set1_epi32(hi[r]);
        __m256 x[BK / 8], vis[BK / 8], vmax = ninf;
        for (int q = 0; q < BK / 8; q++) {
            __m256i col = _mm256_add_epi32(idx, _mm256_set1_epi32(8 * q));
            __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi32(vlo, col), _mm256_cmpgt_epi32(vhi, col));
            vis[q] = _mm256_castsi256_ps(in);
            x[q] = _mm256_blendv_ps(ninf, _mm256_mul_ps(_mm256_loadu_ps(sr + 8 * q), vs), vis[q]);
            vmax = _mm256_max_ps(vmax, x[q]);
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
        float mx = _mm_cvtss_f32(m4);
        float mold = b->m[r], mnew = mold > mx ? mold : mx;
        float alpha = mold == mnew ? 1.0f : expf(mold - mnew);
        __m256 vm = _mm256_set1_ps(mnew), vsum = _mm256_setzero_ps();
        for (int q = 0; q < BK / 8; q++) {
            x[q] = _mm256_and_ps(exp256(_mm256_sub_ps(x[q], vm)), vis[q]);
            vsum = _mm256_add_ps(vsum, x[q]);
            if (b->bf16) {
                __m256i u = _mm256_castps_si256(x[q]);
                __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
                u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb));
                x[q] = _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32((int)0xFFFF0000u)));
            }
            _mm256_storeu_ps(sr + 8 * q, x[q]);
        }
        __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(vsum), _mm256_extractf128_ps(vsum, 1));
        s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
        b->m[r] = mnew;
        b->l[r] = b->l[r] * alpha + _mm_cvtss_f32(s4);
        if (alpha != 1) {
            float *orow = b->o + (size_t)r * b->d16;
            __m256 va = _mm256_set1_ps(alpha);
            for (int c = 0; c < b->d16; c += 8) _mm256_storeu_ps(orow + c, _mm256_mul_ps(_mm256_loadu_ps(orow + c), va));
        }
    }
}
#endif

#ifdef MUMU_X86
// ---- AVX2 + FMA register tiles -----------------------------------------------------------------------------
// (see the header comment). Rows are taken RA at a time up to b->rows rounded up (Q's padding rows are zero, BQ
// is a multiple of 6 and 4), key chunks of 16 up to jn rounded up (packed K is zero past the last key).
#define TGT_AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

AVX2_INLINE __m256 bf_lo8(__m256i w) { return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)); }
AVX2_INLINE __m256 bf_hi8(__m256i w) { return _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32((int)0xFFFF0000u))); }

// S[r0 + r][16x .. 16x + 16) = acc[r] for RA rows; after the last chunk, the rest of the rows' 64 columns zero.
AVX2_INLINE void s_tile_store(const blk *b, int r0, int x, int ra, __m256 acc[][2]) {
    for (int r = 0; r < ra; r++) {
        _mm256_storeu_ps(b->s + (r0 + r) * BK + 16 * x, acc[r][0]);
        _mm256_storeu_ps(b->s + (r0 + r) * BK + 16 * x + 8, acc[r][1]);
    }
}
AVX2_INLINE void s_rows_clear_after(const blk *b, int r0, int ra, int chunks) {
    for (int r = 0; r < ra; r++)
        for (int j = 16 * chunks; j < BK; j++) b->s[(r0 + r) * BK + j] = 0;
}
// The 16-channel tile of O at o (rows d16 apart) into / out of registers.
AVX2_INLINE void o_tile_load(const float *o, int d16, int ra, __m256 acc[][2]) {
    for (int r = 0; r < ra; r++) {
        acc[r][0] = _mm256_loadu_ps(o + (size_t)r * d16);
        acc[r][1] = _mm256_loadu_ps(o + (size_t)r * d16 + 8);
    }
}
AVX2_INLINE void o_tile_store(float *o, int d16, int ra, __m256 acc[][2]) {
    for (int r = 0; r < ra; r++) {
        _mm256_storeu_ps(o + (size_t)r * d16, acc[r][0]);
        _mm256_storeu_ps(o + (size_t)r * d16 + 8, acc[r][1]);
    }
}

TGT_AVX2 static void qk_avx2_f32(const blk *b, const float *kb, int jn) {
    enum { RA = 6 };
    const int d = b->d, chunks = ceil_div(jn, 16);
    const float *qp = b->qp;
    for (int r0 = 0; r0 < b->rows; r0 += RA) {
        const float *q = qp + (size_t)r0 * d;
        for (int x = 0; x < chunks; x++) {
            __m256 acc[RA][2];
            for (int r = 0; r < RA; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
            const float *k = kb + 16 * x;
            for (int c = 0; c < d; c++) {
                const __m256 k0 = _mm256_loadu_ps(k + (size_t)c * BK), k1 = _mm256_loadu_ps(k + (size_t)c * BK + 8);
                for (int r = 0; r < RA; r++) {
                    const __m256 qv = _mm256_broadcast_ss(q + (size_t)r * d + c);
                    acc[r][0] = _mm256_fmadd_ps(qv, k0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(qv, k1, acc[r][1]);
                }
            }
            s_tile_store(b, r0, x, RA, acc);
        }
        s_rows_clear_after(b, r0, RA, chunks);
    }
}

// Q here is the block's bf16-rounded values as f32 rows of 2·ceil(d/2) (the driver writes it so for this path):
// broadcasts of q then load from memory instead of moving halves of a word into vectors.
TGT_AVX2 static void qk_avx2_bf16(const blk *b, const uint32_t *kb, int jn) {
    enum { RA = 4 };
    const int dh = ceil_div(b->d, 2), qs = 2 * dh, chunks = ceil_div(jn, 16);
    const float *qp = b->qp;
    for (int r0 = 0; r0 < b->rows; r0 += RA) {
        const float *q = qp + (size_t)r0 * qs;
        for (int x = 0; x < chunks; x++) {
            __m256 acc[RA][2];
            for (int r = 0; r < RA; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
            const uint32_t *k = kb + 16 * x;
            for (int p = 0; p < dh; p++) {
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(k + (size_t)p * BK));
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(k + (size_t)p * BK + 8));
                const __m256 k0l = bf_lo8(w0), k0h = bf_hi8(w0), k1l = bf_lo8(w1), k1h = bf_hi8(w1);
                for (int r = 0; r < RA; r++) {
                    const __m256 ql = _mm256_broadcast_ss(q + (size_t)r * qs + 2 * p);
                    const __m256 qh = _mm256_broadcast_ss(q + (size_t)r * qs + 2 * p + 1);
                    acc[r][0] = _mm256_fmadd_ps(qh, k0h, _mm256_fmadd_ps(ql, k0l, acc[r][0]));
                    acc[r][1] = _mm256_fmadd_ps(qh, k1h, _mm256_fmadd_ps(ql, k1l, acc[r][1]));
                }
            }
            s_tile_store(b, r0, x, RA, acc);
        }
        s_rows_clear_after(b, r0, RA, chunks);
    }
}

TGT_AVX2 static void pv_avx2_f32(const blk *b, const float *vb, int jn) {
    enum { RA = 6 };
    const int d16 = b->d16;
    for (int r0 = 0; r0 < b->rows; r0 += RA) {
        const float *p = b->s + r0 * BK;
        for (int c0 = 0; c0 < d16; c0 += 16) {
            float *o = b->o + (size_t)r0 * d16 + c0;
            __m256 acc[RA][2];
            o_tile_load(o, d16, RA, acc);
            for (int j = 0; j < jn; j++) {
                const __m256 v0 = _mm256_loadu_ps(vb + (size_t)j * d16 + c0), v1 = _mm256_loadu_ps(vb + (size_t)j * d16 + c0 + 8);
                for (int r = 0; r < RA; r++) {
                    const __m256 pv = _mm256_broadcast_ss(p + r * BK + j);
                    acc[r][0] = _mm256_fmadd_ps(pv, v0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(pv, v1, acc[r][1]);
                }
            }
            o_tile_store(o, d16, RA, acc);
        }
    }
}

TGT_AVX2 static void pv_avx2_bf16(const blk *b, const uint32_t *vb, int jn) {
    enum { RA = 4 };
    const int d16 = b->d16, jp = ceil_div(jn, 2);
    for (int r0 = 0; r0 < b->rows; r0 += RA) {
        const float *p = b->s + r0 * BK;   // P rounded to bf16, as f32 (softmax_avx2)
        for (int c0 = 0; c0 < d16; c0 += 16) {
            float *o = b->o + (size_t)r0 * d16 + c0;
            __m256 acc[RA][2];
            o_tile_load(o, d16, RA, acc);
            for (int j = 0; j < jp; j++) {
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(vb + (size_t)j * d16 + c0));
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(vb + (size_t)j * d16 + c0 + 8));
                const __m256 v0l = bf_lo8(w0), v0h = bf_hi8(w0), v1l = bf_lo8(w1), v1h = bf_hi8(w1);
                for (int r = 0; r < RA; r++) {
                    const __m256 pl = _mm256_broadcast_ss(p + r * BK + 2 * j), ph = _mm256_broadcast_ss(p + r * BK + 2 * j + 1);
                    acc[r][0] = _mm256_fmadd_ps(ph, v0h, _mm256_fmadd_ps(pl, v0l, acc[r][0]));
                    acc[r][1] = _mm256_fmadd_ps(ph, v1h, _mm256_fmadd_ps(pl, v1l, acc[r][1]));
                }
            }
            o_tile_store(o, d16, RA, acc);
        }
    }
}
#endif

#ifdef MUMU_X86
// ---- AVX-512 kernels ----------------------------------------------------------------------------------
#define TGT_F32 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))
#define TGT_BF16 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16")))
#define INLINE static inline __attribute__((always_inline))


// Online softmax of the block, P as f32 in S (bf16 = 0) or as bf16 in p16 (bf16 = 1).
INLINE __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl"))) void
softmax_avx_body(const blk *b, const int *lo, const int *hi, float scale, int bf16,
                 void (*store16)(uint32_t *, __m512, __m512)) {
    const __m512 vs = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
    for (int r = 0; r < BQ; r++) {
        float *sr = b->s + r * BK;
        uint32_t *pr = b->p16 + r * (BK / 2);
        if (r >= b->rows || lo[r] >= hi[r]) {
            if (bf16) {
                _mm512_storeu_si512((void *)pr, _mm512_setzero_si512());
                _mm512_storeu_si512((void *)(pr + 16), _mm512_setzero_si512());
            } else {
                for (int x = 0; x < 4; x++) _mm512_storeu_ps(sr + 16 * x, _mm512_setzero_ps());
            }
            continue;
        }
        uint64_t vis = (hi[r] >= 64 ? ~0ull : ((1ull << hi[r]) - 1)) & ~((1ull << lo[r]) - 1);
        __m512 x[4];
        __mmask16 km[4];
        __m512 vmax = ninf;
        for (int q = 0; q < 4; q++) {
            km[q] = (__mmask16)(vis >> (16 * q));
            x[q] = _mm512_mask_mov_ps(ninf, km[q], _mm512_mul_ps(_mm512_loadu_ps(sr + 16 * q), vs));
            vmax = _mm512_max_ps(vmax, x[q]);
        }
        float mx = _mm512_reduce_max_ps(vmax);
        float mold = b->m[r], mnew = mold > mx ? mold : mx;
        float alpha = mold == mnew ? 1.0f : expf(mold - mnew);
        __m512 vm = _mm512_set1_ps(mnew), vsum = _mm512_setzero_ps();
        for (int q = 0; q < 4; q++) {
            x[q] = _mm512_maskz_mov_ps(km[q], exp512(_mm512_sub_ps(x[q], vm)));
            vsum = _mm512_add_ps(vsum, x[q]);
        }
        if (bf16) {
            store16(pr, x[0], x[1]);
            store16(pr + 16, x[2], x[3]);
        } else {
            for (int q = 0; q < 4; q++) _mm512_storeu_ps(sr + 16 * q, x[q]);
        }
        b->m[r] = mnew;
        float *l16 = b->l16 + r * 16;
        if (alpha != 1) {
            __m512 va = _mm512_set1_ps(alpha);
            _mm512_store_ps(l16, _mm512_fmadd_ps(_mm512_load_ps(l16), va, vsum));
            float *orow = b->o + (size_t)r * b->d16;
            for (int c = 0; c < b->d16; c += 16) _mm512_storeu_ps(orow + c, _mm512_mul_ps(_mm512_loadu_ps(orow + c), va));
        } else {
            _mm512_store_ps(l16, _mm512_add_ps(_mm512_load_ps(l16), vsum));
        }
    }
}

TGT_F32 static void reduce_l16(const blk *b) {
    for (int r = 0; r < b->rows; r++) b->l[r] = _mm512_reduce_add_ps(_mm512_load_ps(b->l16 + r * 16));
}

TGT_F32 static void softmax_avx_f32(const blk *b, const int *lo, const int *hi, float scale) {
    softmax_avx_body(b, lo, hi, scale, 0, NULL);
}
TGT_BF16 static void store_bf16(uint32_t *p, __m512 a, __m512 c) {
    _mm512_storeu_si512((void *)p, (__m512i)_mm512_cvtne2ps_pbh(c, a));
}
TGT_BF16 static void softmax_avx_bf16(const blk *b, const int *lo, const int *hi, float scale) {
    softmax_avx_body(b, lo, hi, scale, 1, store_bf16);
}

// S rows [0, rows) in MR-row tiles x the first 16 NV keys of the block (the rest of the block, past Tk, is
// never read by the softmax).
#define QK_F32(NV)                                                                                            \
    TGT_F32 static void qk_f32_##NV(const blk *b, const float *kb) {                                          \
        const int d = b->d;                                                                                   \
        const float *qp = b->qp;                                                                              \
        for (int r0 = 0; r0 < b->rows; r0 += MR) {                                                            \
            __m512 acc[MR][NV];                                                                               \
            for (int r = 0; r < MR; r++)                                                                      \
                for (int x = 0; x < NV; x++) acc[r][x] = _mm512_setzero_ps();                                 \
            const float *q = qp + (size_t)r0 * d;                                                             \
            for (int c = 0; c < d; c++) {                                                                     \
                __m512 kv[NV];                                                                                \
                for (int x = 0; x < NV; x++) kv[x] = _mm512_load_ps(kb + (size_t)c * BK + 16 * x);            \
                for (int r = 0; r < MR; r++) {                                                                \
                    __m512 qv = _mm512_set1_ps(q[(size_t)r * d + c]);                                         \
                    for (int x = 0; x < NV; x++) acc[r][x] = _mm512_fmadd_ps(qv, kv[x], acc[r][x]);           \
                }                                                                                             \
            }                                                                                                 \
            for (int r = 0; r < MR; r++)                                                                      \
                for (int x = 0; x < NV; x++) _mm512_storeu_ps(b->s + (r0 + r) * BK + 16 * x, acc[r][x]);      \
        }                                                                                                     \
    }
QK_F32(1) QK_F32(2) QK_F32(3) QK_F32(4)

#define QK_BF16(NV)                                                                                           \
    TGT_BF16 static void qk_bf16_##NV(const blk *b, const uint32_t *kb) {                                     \
        const int dp = b->dp, dh = ceil_div(b->d, 2);                                                         \
        const uint32_t *qp = b->qp;                                                                           \
        for (int r0 = 0; r0 < b->rows; r0 += MR) {                                                            \
            __m512 acc[MR][NV];                                                                               \
            for (int r = 0; r < MR; r++)                                                                      \
                for (int x = 0; x < NV; x++) acc[r][x] = _mm512_setzero_ps();                                 \
            const uint32_t *q = qp + (size_t)r0 * dp;                                                         \
            for (int p = 0; p < dh; p++) {                                                                    \
                __m512bh kv[NV];                                                                              \
                for (int x = 0; x < NV; x++)                                                                  \
                    kv[x] = (__m512bh)_mm512_load_si512((const void *)(kb + (size_t)p * BK + 16 * x));        \
                for (int r = 0; r < MR; r++) {                                                                \
                    __m512bh qv = (__m512bh)_mm512_set1_epi32((int)q[(size_t)r * dp + p]);                    \
                    for (int x = 0; x < NV; x++) acc[r][x] = _mm512_dpbf16_ps(acc[r][x], qv, kv[x]);          \
                }                                                                                             \
            }                                                                                                 \
            for (int r = 0; r < MR; r++)                                                                      \
                for (int x = 0; x < NV; x++) _mm512_storeu_ps(b->s + (r0 + r) * BK + 16 * x, acc[r][x]);      \
        }                                                                                                     \
    }
QK_BF16(1) QK_BF16(2) QK_BF16(3) QK_BF16(4)

static void qk_avx_f32(const blk *b, const float *kb, int jn) {
    switch ((jn + 15) / 16) {
    case 1: qk_f32_1(b, kb); break;
    case 2: qk_f32_2(b, kb); break;
    case 3: qk_f32_3(b, kb); break;
    default: qk_f32_4(b, kb); break;
    }
}

static void qk_avx_bf16(const blk *b, const uint32_t *kb, int jn) {
    switch ((jn + 15) / 16) {
    case 1: qk_bf16_1(b, kb); break;
    case 2: qk_bf16_2(b, kb); break;
    case 3: qk_bf16_3(b, kb); break;
    default: qk_bf16_4(b, kb); break;
    }
}

// O[r0 .. r0+MR) x channels [c0, c0 + 16 NV) += P · V over keys [0, jn).
#define PV_F32_TILE(NV)                                                                                       \
    TGT_F32 static void pv_f32_tile##NV(const float *p, const float *vb, float *o, int d16, int jn) {        \
        __m512 acc[MR][NV];                                                                                   \
        for (int r = 0; r < MR; r++)                                                                          \
            for (int x = 0; x < NV; x++) acc[r][x] = _mm512_loadu_ps(o + (size_t)r * d16 + 16 * x);          \
        for (int j = 0; j < jn; j++) {                                                                        \
            __m512 vv[NV];                                                                                    \
            for (int x = 0; x < NV; x++) vv[x] = _mm512_loadu_ps(vb + (size_t)j * d16 + 16 * x);             \
            for (int r = 0; r < MR; r++) {                                                                    \
                __m512 pv = _mm512_set1_ps(p[r * BK + j]);                                                    \
                for (int x = 0; x < NV; x++) acc[r][x] = _mm512_fmadd_ps(pv, vv[x], acc[r][x]);               \
            }                                                                                                 \
        }                                                                                                     \
        for (int r = 0; r < MR; r++)                                                                          \
            for (int x = 0; x < NV; x++) _mm512_storeu_ps(o + (size_t)r * d16 + 16 * x, acc[r][x]);          \
    }
PV_F32_TILE(1) PV_F32_TILE(2) PV_F32_TILE(3) PV_F32_TILE(4)

#define PV_BF16_TILE(NV)                                                                                      \
    TGT_BF16 static void pv_bf16_tile##NV(const uint32_t *p, const uint32_t *vb, float *o, int d16, int jp) { \
        __m512 acc[MR][NV];                                                                                   \
        for (int r = 0; r < MR; r++)                                                                          \
            for (int x = 0; x < NV; x++) acc[r][x] = _mm512_loadu_ps(o + (size_t)r * d16 + 16 * x);          \
        for (int j = 0; j < jp; j++) {                                                                        \
            __m512bh vv[NV];                                                                                  \
            for (int x = 0; x < NV; x++)                                                                      \
                vv[x] = (__m512bh)_mm512_loadu_si512((const void *)(vb + (size_t)j * d16 + 16 * x));          \
            for (int r = 0; r < MR; r++) {                                                                    \
                __m512bh pv = (__m512bh)_mm512_set1_epi32((int)p[r * (BK / 2) + j]);                          \
                for (int x = 0; x < NV; x++) acc[r][x] = _mm512_dpbf16_ps(acc[r][x], pv, vv[x]);              \
            }                                                                                                 \
        }                                                                                                     \
        for (int r = 0; r < MR; r++)                                                                          \
            for (int x = 0; x < NV; x++) _mm512_storeu_ps(o + (size_t)r * d16 + 16 * x, acc[r][x]);          \
    }
PV_BF16_TILE(1) PV_BF16_TILE(2) PV_BF16_TILE(3) PV_BF16_TILE(4)

static void pv_avx_f32(const blk *b, const float *vb, int jn) {
    const int d16 = b->d16;
    for (int r0 = 0; r0 < b->rows; r0 += MR) {
        const float *p = b->s + r0 * BK;
        float *o = b->o + (size_t)r0 * d16;
        for (int c0 = 0; c0 < d16; c0 += 64) {
            switch ((d16 - c0) / 16) {
            case 1: pv_f32_tile1(p, vb + c0, o + c0, d16, jn); break;
            case 2: pv_f32_tile2(p, vb + c0, o + c0, d16, jn); break;
            case 3: pv_f32_tile3(p, vb + c0, o + c0, d16, jn); break;
            default: pv_f32_tile4(p, vb + c0, o + c0, d16, jn); break;
            }
        }
    }
}

static void pv_avx_bf16(const blk *b, const uint32_t *vb, int jn) {
    const int d16 = b->d16, jp = ceil_div(jn, 2);
    for (int r0 = 0; r0 < b->rows; r0 += MR) {
        const uint32_t *p = b->p16 + r0 * (BK / 2);
        float *o = b->o + (size_t)r0 * d16;
        for (int c0 = 0; c0 < d16; c0 += 64) {
            switch ((d16 - c0) / 16) {
            case 1: pv_bf16_tile1(p, vb + c0, o + c0, d16, jp); break;
            case 2: pv_bf16_tile2(p, vb + c0, o + c0, d16, jp); break;
            case 3: pv_bf16_tile3(p, vb + c0, o + c0, d16, jp); break;
            default: pv_bf16_tile4(p, vb + c0, o + c0, d16, jp); break;
            }
        }
    }
}

// q_block_f16's row on AVX-512: the scalar loop's values (an all-zero piece's scale differs; it multiplies zeros).
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl"))) static void q_row_f16_avx(const float *src, int d,
                                                                                       uint32_t *q, float *qs) {
    const int words = round_up(d, 16);
    for (int c0 = 0; c0 < d; c0 += 64)
        qs[c0 / 64] = mumu_f16_piece_words(src + c0, d - c0, words - c0 < 64 ? words - c0 : 64, q + c0);
}

// ---- AVX-512 FP16 (format 2) ----------------------------------------------------------------------------
// 8-row tiles (BQ is a multiple of 8): per channel (S) or key (PV) two f16 vectors of K / V and eight 32-bit
// broadcasts of Q / P (each word holds its f16 twice: vbroadcastss runs on the load ports, a 16-bit broadcast
// would take a shuffle from the FMA ports), 16 f16 accumulators, widened into f32 at the end of each 64-channel
// piece (S) or key block (PV).
#define TGT_FP16 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512fp16")))
#define MF 8

TGT_FP16 static inline __m512 widen_half(__m512h acc, int upper) {
    const __m512i bits = _mm512_castph_si512(acc);
    return _mm512_cvtph_ps(upper ? _mm512_extracti64x4_epi64(bits, 1) : _mm512_castsi512_si256(bits));
}

// S = (Q · Kᵀ) with the scales: per 64-channel piece, S (=|+=) f16 sums x q scale x key scales; keys [0, 32 nk)
// (the softmax reads no column past the block's last key).
TGT_FP16 static inline __attribute__((always_inline)) void qk_f16_keys(const blk *b, const void *kb, const int nk) {
    const int d = b->d, dq = round_up(d, 16), nch = ceil_div(d, 64);
    const _Float16 *kt = kb;
    const float *ks = (const float *)(kt + (size_t)d * BK);
    const float *q = b->qp;                         // the words, read as floats for vbroadcastss
    const float *qs = q + (size_t)BQ * dq;
    __m512 ksv[4];
    for (int x = 0; x < 2 * nk; x++) ksv[x] = _mm512_load_ps(ks + 16 * x);
    for (int r0 = 0; r0 < b->rows; r0 += MF) {
        for (int ch = 0; ch < nch; ch++) {
            const int c0 = ch * 64, c1 = d < c0 + 64 ? d : c0 + 64;
            __m512h acc[MF][2];
            for (int r = 0; r < MF; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ph();
            for (int c = c0; c < c1; c++) {
                const __m512h w0 = _mm512_load_ph(kt + (size_t)c * BK);
                const __m512h w1 = nk > 1 ? _mm512_load_ph(kt + (size_t)c * BK + 32) : w0;
                for (int r = 0; r < MF; r++) {
                    const __m512h x = _mm512_castps_ph(_mm512_set1_ps(q[(size_t)(r0 + r) * dq + c]));
                    acc[r][0] = _mm512_fmadd_ph(x, w0, acc[r][0]);
                    if (nk > 1) acc[r][1] = _mm512_fmadd_ph(x, w1, acc[r][1]);
                }
            }
            for (int r = 0; r < MF; r++) {
                float *sr = b->s + (r0 + r) * BK;
                const __m512 sq = _mm512_set1_ps(qs[(size_t)(r0 + r) * nch + ch]);
                for (int x = 0; x < 2 * nk; x++) {
                    const __m512 v = widen_half(acc[r][x / 2], x & 1), m = _mm512_mul_ps(sq, ksv[x]);
                    _mm512_storeu_ps(sr + 16 * x, ch == 0 ? _mm512_mul_ps(v, m) : _mm512_fmadd_ps(v, m, _mm512_loadu_ps(sr + 16 * x)));
                }
            }
        }
    }
}

TGT_FP16 static void qk_f16(const blk *b, const void *kb, int jn) {
    if (jn > 32) qk_f16_keys(b, kb, 2);
    else qk_f16_keys(b, kb, 1);
}

// O[r0 .. r0+MF) x channels [c0, c0 + 32 np) += (P · V over keys [0, jn)) x the channel scales; p: the rows' P
// as f16 words.
TGT_FP16 static inline __attribute__((always_inline)) void pv_f16_tile(const float *p, const _Float16 *v,
        const float *vs, float *o, int d16, int jn, const int np) {
    __m512h acc[MF][2];
    for (int r = 0; r < MF; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ph();
    for (int j = 0; j < jn; j++) {
        const __m512h w0 = _mm512_load_ph(v + (size_t)j * d16);
        const __m512h w1 = np > 1 ? _mm512_load_ph(v + (size_t)j * d16 + 32) : w0;
        for (int r = 0; r < MF; r++) {
            const __m512h x = _mm512_castps_ph(_mm512_set1_ps(p[r * BK + j]));
            acc[r][0] = _mm512_fmadd_ph(x, w0, acc[r][0]);
            if (np > 1) acc[r][1] = _mm512_fmadd_ph(x, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < MF; r++)
        for (int x = 0; x < 2 * np; x++) {
            float *or = o + (size_t)r * d16 + 16 * x;
            _mm512_storeu_ps(or, _mm512_fmadd_ps(widen_half(acc[r][x / 2], x & 1), _mm512_load_ps(vs + 16 * x), _mm512_loadu_ps(or)));
        }
}

TGT_FP16 static void pv_f16(const blk *b, const void *vb, int jn) {
    const int d16 = b->d16;
    const _Float16 *v = vb;
    const float *vs = (const float *)(v + (size_t)BK * d16);
    uint32_t pw[MF * BK] __attribute__((aligned(64)));
    for (int r0 = 0; r0 < b->rows; r0 += MF) {
        // The rows' P (f32 in S, from the f32 softmax) as f16 words, each value twice.
        for (int r = 0; r < MF; r++)
            for (int x = 0; x < 4; x++) {
                const __m512i w = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(_mm512_loadu_ps(b->s + (r0 + r) * BK + 16 * x),
                                                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                _mm512_store_si512((void *)(pw + r * BK + 16 * x), _mm512_or_si512(w, _mm512_slli_epi32(w, 16)));
            }
        float *o = b->o + (size_t)r0 * d16;
        for (int c0 = 0; c0 < d16; c0 += 64) {
            if (d16 - c0 > 32) pv_f16_tile((const float *)pw, v + c0, vs + c0, o + c0, d16, jn, 2);
            else pv_f16_tile((const float *)pw, v + c0, vs + c0, o + c0, d16, jn, 1);
        }
    }
}

// n floats to bf16 (vcvtne2ps2bf16: nearest even, subnormals flushed), zero-filled to a multiple of 32.
TGT_BF16 static void q_row_bf16_avx(const float *src, int n, uint16_t *dst) {
    for (int c = 0; c < n; c += 32) {
        int left = n - c;
        __mmask16 k0 = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
        __mmask16 k1 = left >= 32 ? 0xFFFF : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        __m512 lo = _mm512_maskz_loadu_ps(k0, src + c), hi = _mm512_maskz_loadu_ps(k1, src + c + 16);
        _mm512_storeu_si512((void *)(dst + c), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

// bf16 K and V packing (the layout of mumu_attention_pack_kv; `packed` already zeroed): K rows converted 32
// channels at a time and their words stored down the block's column; V rows converted in pairs of keys and
// interleaved (word c = v[2jp][c] | v[2jp+1][c] << 16). vcvtneps2bf16 flushes subnormals to zero.
TGT_BF16 static void pack_kv_bf16_avx(const mumu_attention_args *a, const float *k, const float *v, dims s,
                                      uint32_t *kp, uint32_t *vp) {
    const int d = s.d, tk = a->tk;
    uint16_t row[s.dp * 2 + 32] __attribute__((aligned(64)));
    for (int j = 0; j < tk; j++) {
        q_row_bf16_avx(k + (size_t)j * a->ldk, d, row);
        const uint32_t *w = (const uint32_t *)row;
        uint32_t *kb = kp + (size_t)(j / BK) * s.dp * BK + j % BK;
        for (int p = 0; p < (d + 1) / 2; p++) kb[(size_t)p * BK] = w[p];
    }
    for (int j = 0; j < tk; j += 2) {
        const float *v0 = v + (size_t)j * a->ldv, *v1 = v0 + a->ldv;
        const int two = j + 1 < tk;
        uint32_t *dst = vp + (size_t)(j / 2) * s.d16;
        for (int c = 0; c < d; c += 16) {
            __mmask16 m = d - c >= 16 ? 0xFFFF : (__mmask16)((1u << (d - c)) - 1);
            __m256i lo = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, v0 + c));
            __m256i hi = two ? (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, v1 + c)) : _mm256_setzero_si256();
            __m512i wv = _mm512_or_si512(_mm512_cvtepu16_epi32(lo), _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
            _mm512_mask_storeu_epi32(dst + c, m, wv);
        }
    }
}

// ---- AMX kernels ----------------------------------------------------------------------------------------
#define TGT_AMX __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))


// Tiles 0..3: C (16 rows x 16 f32); 4: A (16 rows x 16 pairs); 5..7: B (16 pairs x 16 columns). All 16 x 64 B.

TGT_AMX static void qk_amx(const blk *b, const uint32_t *kb) {
    const int dp = b->dp;
    const uint32_t *qp = b->qp;
    for (int r0 = 0; r0 < b->rows; r0 += 16) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        const uint32_t *q = qp + (size_t)r0 * dp;
        for (int p = 0; p < dp; p += 16) {
            const uint32_t *k = kb + (size_t)p * BK;
            _tile_loadd(4, q + p, dp * 4);
            _tile_loadd(5, k, BK * 4);
            _tile_loadd(6, k + 16, BK * 4);
            _tile_dpbf16ps(0, 4, 5);
            _tile_loadd(7, k + 32, BK * 4);
            _tile_dpbf16ps(1, 4, 6);
            _tile_loadd(5, k + 48, BK * 4);
            _tile_dpbf16ps(2, 4, 7);
            _tile_dpbf16ps(3, 4, 5);
        }
        float *s = b->s + r0 * BK;
        _tile_stored(0, s, BK * 4); _tile_stored(1, s + 16, BK * 4);
        _tile_stored(2, s + 32, BK * 4); _tile_stored(3, s + 48, BK * 4);
    }
}

TGT_AMX static void pv_amx(const blk *b, const uint32_t *vb, int jn) {
    const int d16 = b->d16, steps = ceil_div(jn, 32);
    const long os = (long)d16 * 4;
    for (int r0 = 0; r0 < b->rows; r0 += 16) {
        const uint32_t *p = b->p16 + r0 * (BK / 2);
        float *o = b->o + (size_t)r0 * d16;
        for (int c0 = 0; c0 < d16; c0 += 64) {
            const int nt = (d16 - c0) / 16 >= 4 ? 4 : (d16 - c0) / 16;
            float *oc = o + c0;
            _tile_loadd(0, oc, os);
            if (nt > 1) _tile_loadd(1, oc + 16, os);
            if (nt > 2) _tile_loadd(2, oc + 32, os);
            if (nt > 3) _tile_loadd(3, oc + 48, os);
            for (int s = 0; s < steps; s++) {
                const uint32_t *v = vb + (size_t)s * 16 * d16 + c0;
                _tile_loadd(4, p + s * 16, (BK / 2) * 4);
                _tile_loadd(5, v, os);
                _tile_dpbf16ps(0, 4, 5);
                if (nt > 1) { _tile_loadd(6, v + 16, os); _tile_dpbf16ps(1, 4, 6); }
                if (nt > 2) { _tile_loadd(7, v + 32, os); _tile_dpbf16ps(2, 4, 7); }
                if (nt > 3) { _tile_loadd(5, v + 48, os); _tile_dpbf16ps(3, 4, 5); }
            }
            _tile_stored(0, oc, os);
            if (nt > 1) _tile_stored(1, oc + 16, os);
            if (nt > 2) _tile_stored(2, oc + 32, os);
            if (nt > 3) _tile_stored(3, oc + 48, os);
        }
    }
}
TGT_AMX static void amx_release(void) { _tile_release(); }
#endif

// ---- driver ---------------------------------------------------------------------------------------------

void mumu_attention_rows(const mumu_attention_args *a, int path, int h, int r0, int r1, const void *packed,
                         void *scratch) {
    if (r0 >= r1) return;
    const dims s = dims_of(a);
    const int d = s.d, d16 = s.d16, dp = s.dp, tk = a->tk, bf = a->bf16 == 1, f16 = a->bf16 == MUMU_ATTENTION_F16;
    path = clamp_path(path, a->bf16);
    const int g = h / (a->heads / a->kv_heads);
    const long off = (long)tk - a->tq;   // query i sits at position i + off
    (void)g;

    // Scratch.
    char *sp = align64(scratch);
    void *qp = sp; sp = align64(sp + q_block_bytes(s));
    blk b;
    b.bf16 = bf; b.d = d; b.d16 = d16; b.dp = dp; b.qp = qp;
    b.s = (float *)sp; sp = align64(sp + (size_t)BQ * BK * 4);
    b.p16 = (uint32_t *)sp; sp = align64(sp + (size_t)BQ * (BK / 2) * 4);
    b.o = (float *)sp; sp = align64(sp + (size_t)BQ * d16 * 4);
    b.m = (float *)sp; b.l = b.m + BQ; sp = align64(sp + 2 * BQ * 4);
    b.l16 = (float *)sp;

    const char *kbase = packed;
    const size_t kblock = f16 ? k_block_f16(s) : (size_t)(bf ? dp : d) * BK * 4;   // bytes per K block
    const char *vbase = kbase + (size_t)s.nb * kblock;
    const size_t vblock = f16 ? v_block_f16(s) : (size_t)(bf ? BK / 2 : BK) * d16 * 4;   // bytes per V block

#ifdef MUMU_X86
    if (path == 3) amx_config();
#endif
    int lo[BQ], hi[BQ];
    for (int ib = r0; ib < r1; ib += BQ) {
        const int rows = r1 - ib < BQ ? r1 - ib : BQ;
        b.rows = rows;
        // Q block (rows beyond `rows` zero).
        if (f16) {
            q_block_f16(a, s, h, ib, rows, qp);
        } else if (!bf) {
            float *q = qp;
            memset(q, 0, (size_t)BQ * d * 4);
            for (int r = 0; r < rows; r++) memcpy(q + (size_t)r * d, a->q + (size_t)(ib + r) * a->ldq + (size_t)h * d, (size_t)d * 4);
        } else if (path == 1) {   // AVX2: rounded values as f32 rows of 2·ceil(d/2) (qk_avx2_bf16)
            float *q = qp;
            const int qs = 2 * ceil_div(d, 2);
            memset(q, 0, (size_t)BQ * qs * 4);
            for (int r = 0; r < rows; r++) {
                const float *src = a->q + (size_t)(ib + r) * a->ldq + (size_t)h * d;
                for (int c = 0; c < d; c++) q[(size_t)r * qs + c] = u2f((uint32_t)f32_to_bf16(src[c]) << 16);
            }
        } else {
            uint16_t *q = qp;
            memset(q, 0, (size_t)BQ * dp * 4);
            for (int r = 0; r < rows; r++) {
                const float *src = a->q + (size_t)(ib + r) * a->ldq + (size_t)h * d;
#ifdef MUMU_X86
                if (path >= 2) { q_row_bf16_avx(src, d, q + (size_t)r * dp * 2); continue; }
#endif
                for (int c = 0; c < d; c++) q[(size_t)r * dp * 2 + c] = f32_to_bf16(src[c]);
            }
        }
        memset(b.o, 0, (size_t)BQ * d16 * 4);
        for (int r = 0; r < BQ; r++) { b.m[r] = -INFINITY; b.l[r] = 0; }
        memset(b.l16, 0, (size_t)BQ * 64);
        // Keys any row of the block may see: [jmin, jmax).
        long jmax = tk, jmin = 0;
        if (a->causal) { long e = ib + rows - 1 + off + 1; if (e < jmax) jmax = e; }
        if (a->window > 0) { long st = ib + off - a->window + 1; if (st > jmin) jmin = st; }
        for (long j0 = (jmin / BK) * BK; j0 < jmax; j0 += BK) {
            const int kbi = (int)(j0 / BK);
            const int jn = tk - j0 < BK ? (int)(tk - j0) : BK;
            for (int r = 0; r < BQ; r++) {
                long pos = ib + r + off, l0 = 0, h0 = tk;
                if (a->causal && pos + 1 < h0) h0 = pos + 1;
                if (a->window > 0 && pos - a->window + 1 > l0) l0 = pos - a->window + 1;
                l0 -= j0; h0 -= j0;
                lo[r] = l0 < 0 ? 0 : l0 > BK ? BK : (int)l0;
                hi[r] = h0 < 0 ? 0 : h0 > BK ? BK : (int)h0;
            }
            const void *kb = kbase + (size_t)kbi * kblock, *vb = vbase + (size_t)kbi * vblock;
            if (f16) {
#ifdef MUMU_X86
                if (path == 2) {
                    qk_f16(&b, kb, jn);
                    softmax_avx_f32(&b, lo, hi, a->scale);
                    pv_f16(&b, vb, jn);
                    continue;
                }
#endif
                qk_f16_portable(&b, kb);
                softmax_portable(&b, lo, hi, a->scale);
                pv_f16_portable(&b, vb, jn);
                continue;
            }
            switch (path) {
#ifdef MUMU_X86
            case 3:
                qk_amx(&b, kb);
                softmax_avx_bf16(&b, lo, hi, a->scale);
                pv_amx(&b, vb, jn);
                break;
            case 2:
                if (bf) {
                    qk_avx_bf16(&b, kb, jn);
                    softmax_avx_bf16(&b, lo, hi, a->scale);
                    pv_avx_bf16(&b, vb, jn);
                } else {
                    qk_avx_f32(&b, kb, jn);
                    softmax_avx_f32(&b, lo, hi, a->scale);
                    pv_avx_f32(&b, vb, jn);
                }
                break;
            case 1:
                if (bf) qk_avx2_bf16(&b, kb, jn); else qk_avx2_f32(&b, kb, jn);
                softmax_avx2(&b, lo, hi, a->scale);
                if (bf) pv_avx2_bf16(&b, vb, jn); else pv_avx2_f32(&b, vb, jn);
                break;
#endif
            default:
                qk_portable(&b, kb);
                softmax_portable(&b, lo, hi, a->scale);
                pv_portable(&b, vb, jn);
                break;
            }
        }
#ifdef MUMU_X86
        if (path >= 2) reduce_l16(&b);
#endif
        for (int r = 0; r < rows; r++) {
            float *dst = a->out + (size_t)(ib + r) * a->ldo + (size_t)h * d;
            const float *orow = b.o + (size_t)r * d16;
            const float inv = b.l[r] > 0 ? 1.0f / b.l[r] : 0.0f;
            for (int c = 0; c < d; c++) dst[c] = orow[c] * inv;
        }
    }
#ifdef MUMU_X86
    if (path == 3) amx_release();
#endif
}
