// bf16-weight GEMM (see mumu_gemm.h): C (=|+=) A·Wᵀ + bias with W pre-packed in 32-column panels of k-pairs
// (each 32-bit word holds W[n, 2p] and W[n, 2p+1]: the operand layout of vdpbf16ps and, 16 pairs x 16 columns
// at a time, of an AMX B tile).
//
// Both fast paths take the call's rows a block at a time and, per slice of K, round that block of A to bf16
// into the scratch, row-major in k-pairs (one packing serves both: AVX-512 broadcasts a pair of a row, AMX
// loads 16 rows x 16 pairs as an A tile). Every 32-column W panel in [n0, n1) then meets every sliver of rows
// of the packed block: the packed block stays in L2 while the panels pass, the panel's K slice stays in L1
// (AVX-512) or L2 (AMX) while the slivers pass.
//  AVX-512: slices of KC pairs, blocks of MC_AVX rows, a 14 x 32 microkernel (28 zmm accumulators; per pair one
//    broadcast A pair per row against the panel's two W vectors); C is stored after every slice (and loaded
//    again for the next). On Sapphire Rapids vdpbf16ps zmm issues at half the rate of vfmadd zmm (measured 86
//    against 175 GFLOP/s a core), so this path peaks at about f32 FMA speed; it is the fallback for CPUs
//    without AMX or AVX-512 FP16 (gemm_f16.c, the path of such Intel CPUs), e.g. AMD's Zen 4.
//  AMX: slices of up to AMX_KCO_MAX pairs (all of K for every SDXL shape but K = 11520), blocks of rows sized to
//    AMX_ABUDGET; a 32 x 32 microkernel (four C tiles, two A and two B tiles) keeps C in the tile registers for
//    the whole slice and stores it with tilestored (C's lines prefetched for writing while the products run).
//    Tiles cut by the ends of M or N go through a bounce buffer and masked AVX-512 stores.
#include "mumu_gemm.h"
#include "gemm_f16.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include "amx_tiles.h"
#include <sys/syscall.h>
#include <unistd.h>
#define MUMU_X86 1
#endif

#define NR 32          // panel width (columns), MUMU_BF16_PANEL
#define KC 256         // k-pairs per K slice (multiple of 16)
#define ASTR (KC + 16) // uint32 words per packed A row
#define MR 14          // AVX-512 microkernel rows
#define MC_AVX (MR * 18)
#define MC_MAX 256     // >= MC_AVX
#define PROWS 4        // portable path rows per step

static inline int kpairs(int k) { return (((k + 1) / 2) + 15) & ~15; }
static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline uint16_t f32_to_bf16(float f) {
    uint32_t x = f2u(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x0040);     // quiet NaN
    x += 0x7FFF + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

// ---- packing of W -------------------------------------------------------------------------------

size_t mumu_bf16_packed_bytes(int n, int k) {
    if (n <= 0 || k <= 0) return 0;
    return (size_t)ceil_div(n, NR) * (size_t)kpairs(k) * NR * 4;
}

// One row of W (bf16 bits) into its panel column: word p of the column holds elements 2p and 2p+1.
static void pack_row(uint32_t *packed, int r, int kp, const uint16_t *src, int k) {
    uint32_t *dst = packed + (size_t)(r / NR) * kp * NR + (r % NR);
    int e = 0;
    for (; e + 1 < k; e += 2) dst[(size_t)(e / 2) * NR] = (uint32_t)src[e] | ((uint32_t)src[e + 1] << 16);
    if (e < k) dst[(size_t)(e / 2) * NR] = src[e];
}

void mumu_bf16_pack_bf16(const uint16_t *w, int n, int k, void *packed) {
    size_t bytes = mumu_bf16_packed_bytes(n, k);
    if (bytes == 0) return;
    memset(packed, 0, bytes);
    for (int r = 0; r < n; r++) pack_row(packed, r, kpairs(k), w + (size_t)r * k, k);
}

void mumu_bf16_pack_f32(const float *w, int n, int k, void *packed) {
    size_t bytes = mumu_bf16_packed_bytes(n, k);
    if (bytes == 0) return;
    memset(packed, 0, bytes);
    uint16_t *row = malloc((size_t)k * sizeof(uint16_t));
    if (!row) abort();
    for (int r = 0; r < n; r++) {
        const float *src = w + (size_t)r * k;
        for (int e = 0; e < k; e++) row[e] = f32_to_bf16(src[e]);
        pack_row(packed, r, kpairs(k), row, k);
    }
    free(row);
}

uint16_t mumu_bf16_packed_at(const void *packed, int n, int k, int row, int col) {
    (void)n;
    const uint32_t *p = packed;
    uint32_t word = p[((size_t)(row / NR) * kpairs(k) + col / 2) * NR + row % NR];
    return (uint16_t)((col & 1) ? word >> 16 : word & 0xFFFF);
}


static inline void *align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

// ---- portable path ----------------------------------------------------------------------------

static inline float bf_lo(uint32_t w) { return u2f(w << 16); }
static inline float bf_hi(uint32_t w) { return u2f(w & 0xFFFF0000u); }

static void gemm_portable(int m, int n, int k, const float *a, long lda, const uint32_t *packed, const float *bias,
                          float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch) {
    (void)m;
    const int kp = kpairs(k), kh = (k + 1) / 2;
    float *ar = align64(scratch);   // PROWS rows of 2*kp floats
    for (int i = m0; i < m1; i += PROWS) {
        int rows = m1 - i < PROWS ? m1 - i : PROWS;
        for (int r = 0; r < PROWS; r++) {
            float *dst = ar + (size_t)r * 2 * kp;
            if (r < rows) {
                const float *src = a + (size_t)(i + r) * lda;
                for (int e = 0; e < k; e++) dst[e] = u2f((uint32_t)f32_to_bf16(src[e]) << 16);
                for (int e = k; e < 2 * kh; e++) dst[e] = 0;
            } else {
                for (int e = 0; e < 2 * kh; e++) dst[e] = 0;
            }
        }
        for (int j = n0; j < n1; j += NR) {
            const uint32_t *bp = packed + (size_t)(j / NR) * kp * NR;
            float acc[PROWS][NR];
            memset(acc, 0, sizeof acc);
            for (int p = 0; p < kh; p++) {
                const uint32_t *wp = bp + (size_t)p * NR;
                for (int r = 0; r < PROWS; r++) {
                    const float a0 = ar[(size_t)r * 2 * kp + 2 * p], a1 = ar[(size_t)r * 2 * kp + 2 * p + 1];
                    for (int q = 0; q < NR; q++) acc[r][q] += a0 * bf_lo(wp[q]) + a1 * bf_hi(wp[q]);
                }
            }
            int cols = n1 - j < NR ? n1 - j : NR;
            for (int r = 0; r < rows; r++) {
                float *cr = c + (size_t)(i + r) * ldc + j;
                for (int q = 0; q < cols; q++) {
                    float v = acc[r][q];
                    if (accumulate) v += cr[q];
                    if (bias) v += bias[j + q];
                    cr[q] = v;
                }
            }
        }
    }
}

#ifdef MUMU_X86
// ---- CPU feature detection ---------------------------------------------------------------------

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int detect_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");   // also checks the OS saves ymm
}

static int detect_avx512bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;          // OSXSAVE
    if ((xgetbv0() & 0xE6) != 0xE6) return 0;                                     // SSE, AVX, opmask, zmm state
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 16)) || !(b & (1u << 30)) || !(b & (1u << 31))) return 0;    // AVX512F, BW, VL
    unsigned maxsub = a;
    if (maxsub < 1) return 0;
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1;                                                          // AVX512_BF16
}

// AVX-512 FP16 (CPUID.(7,0):EDX[23]), only where AVX-512 BF16 is: the paths below it are all available then.
static int detect_avx512fp16(void) {
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    return (d >> 23) & 1;
}

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
static int detect_amx(void) {
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return 0;                       // AMX-BF16, AMX-TILE
    if ((xgetbv0() & (3u << 17)) != (3u << 17)) return 0;                         // XTILECFG, XTILEDATA enabled
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}
#endif

static int isa_hw = -1, isa_env = -1;

static int hardware_isa(void) {
    int v = __atomic_load_n(&isa_hw, __ATOMIC_ACQUIRE);
    if (v >= 0) return v;
    v = 0;
#ifdef MUMU_X86
    if (detect_avx512bf16()) v = detect_amx() ? 4 : detect_avx512fp16() ? 3 : 2;
    else if (detect_avx2_fma()) v = 1;
#endif
    __atomic_store_n(&isa_hw, v, __ATOMIC_RELEASE);
    return v;
}

int mumu_gemm_bf16_isa_available(int isa) {
    // The AVX-512 paths' CPUs all have AVX2 and FMA as well. AMX's (Sapphire Rapids and later) have AVX-512 FP16.
    return isa <= hardware_isa();
}

int mumu_gemm_isa_uses_f16(int isa) { return isa == 3; }

const char *mumu_gemm_bf16_isa_name(int isa) {
    switch (isa) {
    case 1: return "avx2";
    case 2: return "avx512bf16";
    case 3: return "avx512fp16";
    case 4: return "amx";
    default: return "portable";
    }
}

static int isa_cap = -1;

int mumu_gemm_isa_cap(void) {
    int cap = __atomic_load_n(&isa_cap, __ATOMIC_ACQUIRE);
    if (cap >= 0) return cap;
    cap = 4;
    const char *e = getenv("MUMU_GEMM_ISA");
    if (e) {
        if (!strcmp(e, "portable")) cap = 0;
        else if (!strcmp(e, "avx2")) cap = 1;
        else if (!strcmp(e, "avx512bf16")) cap = 2;
        else if (!strcmp(e, "avx512fp16")) cap = 3;
    }
    __atomic_store_n(&isa_cap, cap, __ATOMIC_RELEASE);
    return cap;
}

int mumu_gemm_bf16_isa(void) {
    int v = __atomic_load_n(&isa_env, __ATOMIC_ACQUIRE);
    if (v >= 0) return v;
    v = hardware_isa();
    int cap = mumu_gemm_isa_cap();
    if (cap < v) v = cap;
    __atomic_store_n(&isa_env, v, __ATOMIC_RELEASE);
    return v;
}

#ifdef MUMU_X86
// ---- AVX-512 BF16 path -------------------------------------------------------------------------
#define TGT_AVX __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))

static inline __mmask16 mask_n(int n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

// Rows [0, rows) of A (stride lda, k columns) at pairs [pc, pc + kc) into dst (row stride `as` words): bf16
// nearest even (vcvtne2ps2bf16: subnormals to zero, NaN quiet), zero beyond k. kc is a multiple of 16.
TGT_AVX static void pack_a(const float *a, long lda, int rows, int k, int pc, int kc, uint32_t *dst, long as) {
    for (int r = 0; r < rows; r++) {
        const float *src = a + (size_t)r * lda;
        uint32_t *d = dst + (size_t)r * as;
        for (int q = 0; q < kc; q += 16) {
            int e = 2 * (pc + q), avail = k - e;
            __m512 lo, hi;
            if (avail >= 32) {
                lo = _mm512_loadu_ps(src + e);
                hi = _mm512_loadu_ps(src + e + 16);
            } else {
                lo = _mm512_maskz_loadu_ps(mask_n(avail), src + e);
                hi = _mm512_maskz_loadu_ps(mask_n(avail - 16), src + e + 16);
            }
            _mm512_storeu_si512((void *)(d + q), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}

// The epilogue shared by the kernels: C row = acc (+ C) (+ bias), columns masked.
TGT_AVX static inline __attribute__((always_inline)) void store_row(float *cr, __m512 x0, __m512 x1, __mmask16 k0,
                                                                     __mmask16 k1, int loadc, const float *bias) {
    if (loadc) {
        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(k0, cr));
        x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(k1, cr + 16));
    }
    if (bias) {
        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(k0, bias));
        x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(k1, bias + 16));
    }
    _mm512_mask_storeu_ps(cr, k0, x0);
    _mm512_mask_storeu_ps(cr + 16, k1, x1);
}

// C[0..mr) x [0..32) of this tile (columns masked by k0/k1) from kc pairs of packed A (row stride ASTR) and a
// W panel slice (32 words per pair).
TGT_AVX static inline __attribute__((always_inline)) void kernel_avx(const int mr, int kc, const uint32_t *a,
        const uint32_t *b, float *c, long ldc, __mmask16 k0, __mmask16 k1, int loadc, const float *bias) {
    __m512 acc0[MR], acc1[MR];
    for (int r = 0; r < mr; r++) { acc0[r] = _mm512_setzero_ps(); acc1[r] = _mm512_setzero_ps(); }
    for (int p = 0; p < kc; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(b + (size_t)p * NR));
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + (size_t)p * NR + 16));
        for (int r = 0; r < mr; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r * ASTR + p]);
            acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
            acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
        }
    }
    for (int r = 0; r < mr; r++) store_row(c + (size_t)r * ldc, acc0[r], acc1[r], k0, k1, loadc, bias);
}

#define KERNEL_CASE(R) case R: kernel_avx(R, kc, a, b, c, ldc, k0, k1, loadc, bias); break;
TGT_AVX static void kernel_avx_rows(int mr, int kc, const uint32_t *a, const uint32_t *b, float *c, long ldc,
                                    __mmask16 k0, __mmask16 k1, int loadc, const float *bias) {
    switch (mr) {
    KERNEL_CASE(1) KERNEL_CASE(2) KERNEL_CASE(3) KERNEL_CASE(4) KERNEL_CASE(5) KERNEL_CASE(6) KERNEL_CASE(7)
    KERNEL_CASE(8) KERNEL_CASE(9) KERNEL_CASE(10) KERNEL_CASE(11) KERNEL_CASE(12) KERNEL_CASE(13)
    default: kernel_avx(MR, kc, a, b, c, ldc, k0, k1, loadc, bias); break;
    }
}

TGT_AVX static void gemm_avx(int n, int k, const float *a, long lda, const uint32_t *packed, const float *bias,
                             float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch) {
    (void)n;
    const int kp = kpairs(k);
    uint32_t *abuf = align64(scratch);
    for (int ic = m0; ic < m1; ic += MC_AVX) {
        const int mc = m1 - ic < MC_AVX ? m1 - ic : MC_AVX;
        for (int pc = 0; pc < kp; pc += KC) {
            const int kc = kp - pc < KC ? kp - pc : KC;
            pack_a(a + (size_t)ic * lda, lda, mc, k, pc, kc, abuf, ASTR);
            const int loadc = pc > 0 || accumulate;
            for (int jc = n0; jc < n1; jc += NR) {
                const int nv = n1 - jc;
                const __mmask16 k0 = mask_n(nv), k1 = mask_n(nv - 16);
                const uint32_t *b = packed + ((size_t)(jc / NR) * kp + pc) * NR;
                const float *bj = pc == 0 && bias ? bias + jc : NULL;
                for (int ir = 0; ir < mc; ir += MR) {
                    const int mr = mc - ir < MR ? mc - ir : MR;
                    kernel_avx_rows(mr, kc, abuf + (size_t)ir * ASTR, b, c + (size_t)(ic + ir) * ldc + jc, ldc,
                                    k0, k1, loadc, bj);
                }
            }
        }
    }
}


// ---- AVX2 + FMA path ---------------------------------------------------------------------------------
// For x86 CPUs without bf16 instructions: the panel's bf16 pairs are widened to f32 in registers (the low half
// shifted up, the high half masked) and multiplied with f32 FMA, so the weights keep half the memory of f32 and
// the product runs near sgemm's speed. A is rounded to bf16 as it is packed, like the other paths, into blocks
// of MC2 rows x KC2 k, in groups of MR2 rows interleaved per k (the microkernel broadcasts A[r, k] from one
// line); a 6 x 16 microkernel (12 ymm accumulators) takes half a panel at a time, so the panel's K slice
// (16 KB) stays in L1 while the row groups of the packed block (in L2) pass.
#define TGT_AVX2 __attribute__((target("avx2,fma")))
#define MR2 6
#define KC2 512        // k per slice (an even number: pairs never straddle slices)
#define MC2 (MR2 * 24)

// Rows [0, rows) of A (stride lda) at k in [kc0, kc0 + kc) into dst: group g holds rows 6g..6g+5 as
// dst[g*kc*6 + kk*6 + r], bf16-rounded f32; rows beyond `rows` and k beyond `k` are zero.
TGT_AVX2 static void pack_a_avx2(const float *a, long lda, int rows, int k, int kc0, int kc, float *dst) {
    const __m256i round = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u), absm = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256i inf = _mm256_set1_epi32(0x7F800000), quiet = _mm256_set1_epi32(0x00400000);
    float row[KC2] __attribute__((aligned(32)));
    const int groups = ceil_div(rows, MR2);
    const int avail = k - kc0 < kc ? k - kc0 : kc;
    for (int g = 0; g < groups; g++) {
        float *d = dst + (size_t)g * kc * MR2;
        for (int r = 0; r < MR2; r++) {
            const int i = g * MR2 + r;
            if (i >= rows) {
                for (int kk = 0; kk < kc; kk++) d[kk * MR2 + r] = 0;
                continue;
            }
            const float *src = a + (size_t)i * lda + kc0;
            int kk = 0;
            for (; kk + 8 <= avail; kk += 8) {
                __m256i x = _mm256_castps_si256(_mm256_loadu_ps(src + kk));
                // nearest even: x + 0x7FFF + bit 16, then the high half; NaN made quiet instead
                __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), one);
                __m256i rounded = _mm256_and_si256(_mm256_add_epi32(x, _mm256_add_epi32(round, lsb)), hi);
                __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, absm), inf);
                __m256i qn = _mm256_and_si256(_mm256_or_si256(x, quiet), hi);
                _mm256_store_ps(row + kk, _mm256_castsi256_ps(_mm256_blendv_epi8(rounded, qn, nan)));
            }
            for (; kk < avail; kk++) row[kk] = u2f((uint32_t)f32_to_bf16(src[kk]) << 16);
            for (; kk < kc; kk++) row[kk] = 0;
            for (kk = 0; kk < kc; kk++) d[kk * MR2 + r] = row[kk];
        }
    }
}

// C[0..mr) x 16 columns (cols of them stored) += / = the product of kc k of a packed row group and half a W
// panel (`b`: word p*32 + c holds the pair p of column c; 16 columns from there).
TGT_AVX2 static inline __attribute__((always_inline)) void kernel_avx2(const int mr, int kc, const float *a,
        const uint32_t *b, float *c, long ldc, int cols, int loadc, const float *bias) {
    __m256 acc0[MR2], acc1[MR2];
    for (int r = 0; r < mr; r++) { acc0[r] = _mm256_setzero_ps(); acc1[r] = _mm256_setzero_ps(); }
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
    for (int p = 0; p < kc / 2; p++) {
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(b + (size_t)p * NR));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(b + (size_t)p * NR + 8));
        __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(w0, 16));
        __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(w1, 16));
        const float *ap = a + (size_t)2 * p * MR2;
        for (int r = 0; r < mr; r++) {
            __m256 av = _mm256_broadcast_ss(ap + r);
            acc0[r] = _mm256_fmadd_ps(av, e0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(av, e1, acc1[r]);
        }
        __m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(w0, hi));
        __m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(w1, hi));
        for (int r = 0; r < mr; r++) {
            __m256 av = _mm256_broadcast_ss(ap + MR2 + r);
            acc0[r] = _mm256_fmadd_ps(av, o0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(av, o1, acc1[r]);
        }
    }
    for (int r = 0; r < mr; r++) {
        float *cr = c + (size_t)r * ldc;
        if (cols == 16) {
            __m256 x0 = acc0[r], x1 = acc1[r];
            if (loadc) { x0 = _mm256_add_ps(x0, _mm256_loadu_ps(cr)); x1 = _mm256_add_ps(x1, _mm256_loadu_ps(cr + 8)); }
            if (bias) { x0 = _mm256_add_ps(x0, _mm256_loadu_ps(bias)); x1 = _mm256_add_ps(x1, _mm256_loadu_ps(bias + 8)); }
            _mm256_storeu_ps(cr, x0);
            _mm256_storeu_ps(cr + 8, x1);
        } else {
            float t[16] __attribute__((aligned(32)));
            _mm256_store_ps(t, acc0[r]);
            _mm256_store_ps(t + 8, acc1[r]);
            for (int q = 0; q < cols; q++) {
                float v = t[q];
                if (loadc) v += cr[q];
                if (bias) v += bias[q];
                cr[q] = v;
            }
        }
    }
}

#define KERNEL2_CASE(R) case R: kernel_avx2(R, kc, a, b, c, ldc, cols, loadc, bias); break;
TGT_AVX2 static void kernel_avx2_rows(int mr, int kc, const float *a, const uint32_t *b, float *c, long ldc,
                                      int cols, int loadc, const float *bias) {
    switch (mr) {
    KERNEL2_CASE(1) KERNEL2_CASE(2) KERNEL2_CASE(3) KERNEL2_CASE(4) KERNEL2_CASE(5)
    default: kernel_avx2(MR2, kc, a, b, c, ldc, cols, loadc, bias); break;
    }
}

TGT_AVX2 static void gemm_avx2(int n, int k, const float *a, long lda, const uint32_t *packed, const float *bias,
                               float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch) {
    (void)n;
    const int kp = kpairs(k), ke = 2 * ((k + 1) / 2);   // k rounded up to whole pairs
    float *abuf = align64(scratch);
    for (int pc = 0; pc < ke; pc += KC2) {
        const int kc = ke - pc < KC2 ? ke - pc : KC2;
        const int loadc = pc > 0 || accumulate;
        for (int ic = m0; ic < m1; ic += MC2) {
            const int mc = m1 - ic < MC2 ? m1 - ic : MC2;
            pack_a_avx2(a + (size_t)ic * lda, lda, mc, k, pc, kc, abuf);
            for (int jc = n0; jc < n1; jc += NR) {
                const uint32_t *panel = packed + ((size_t)(jc / NR) * kp + pc / 2) * NR;
                for (int h = 0; h < NR; h += 16) {
                    const int cols = n1 - (jc + h) < 16 ? n1 - (jc + h) : 16;
                    if (cols <= 0) break;
                    const float *bj = pc == 0 && bias ? bias + jc + h : NULL;
                    for (int ir = 0; ir < mc; ir += MR2) {
                        const int mr = mc - ir < MR2 ? mc - ir : MR2;
                        kernel_avx2_rows(mr, kc, abuf + (size_t)ir * kc, panel + h,
                                         c + (size_t)(ic + ir) * ldc + jc + h, ldc, cols, loadc, bj);
                    }
                }
            }
        }
    }
}

// ---- AMX path ------------------------------------------------------------------------------------
#define TGT_AMX __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl,amx-tile,amx-bf16,prfchw")))


// Tiles: 0..3 C (rows 0-15 x cols 0-15, rows 0-15 x 16-31, rows 16-31 x 0-15, rows 16-31 x 16-31),
// 4, 5 A (rows 0-15, 16-31; 16 pairs each), 6, 7 B (16 pairs x cols 0-15, 16-31). All 16 rows x 64 bytes.

// AMX blocking: the packed A block holds mc rows x kco pairs (row stride amx_stride(kco) words) within
// AMX_ABUDGET bytes, so it stays in L2 while every W panel passes; K beyond AMX_KCO_MAX pairs is done in slices.
#ifndef AMX_ABUDGET
#define AMX_ABUDGET (1 << 20)
#endif
#ifndef AMX_KCO_MAX
#define AMX_KCO_MAX 1536
#endif

static void amx_blocking(int k, int *mc, int *kco) {
    int kp = kpairs(k);
    int slices = ceil_div(kp, AMX_KCO_MAX);
    int kc = ((ceil_div(kp, slices)) + 15) & ~15;
    int rows = (AMX_ABUDGET / ((kc + 32) * 4)) & ~31;
    if (rows < 32) rows = 32;
    if (rows > 256) rows = 256;
    *mc = rows; *kco = kc;
}
static inline int amx_stride(int kco) { int s = kco + 16; return (s / 16) % 2 ? s : s + 16; }

// A 32 x 32 tile of C (mr rows, columns masked) over kc pairs of packed A (row stride as words) and a W panel
// slice. C stays in the tile registers for the whole slice. Full tiles (mr == 32, all columns) load (when
// accumulating) and store C with the tile unit; others go through the bounce buffer `tb` (32 x 32 floats).
TGT_AMX static void kernel_amx(int mr, int kc, const uint32_t *a, long as, const uint32_t *b, float *c, long ldc,
                               __mmask16 k0, __mmask16 k1, int loadc, const float *bias, const float *biastile,
                               float *tb) {
    const long ab = as * 4, cs = ldc * 4;
    const int full = mr == 32 && k0 == 0xFFFF && k1 == 0xFFFF && !(loadc && bias);
    if (mr > 16) {
        if (full && loadc) {
            _tile_loadd(0, c, cs); _tile_loadd(1, c + 16, cs);
            _tile_loadd(2, c + 16 * ldc, cs); _tile_loadd(3, c + 16 * ldc + 16, cs);
        } else if (full && bias) {
            _tile_loadd(0, biastile, 128); _tile_loadd(1, biastile + 16, 128);
            _tile_loadd(2, biastile, 128); _tile_loadd(3, biastile + 16, 128);
        } else {
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        }
        const uint32_t *a1 = a + 16 * as;
        int pr = full ? 0 : 32;   // C's 64 lines are fetched for writing, 8 per step, while the products run
        for (int p = 0; p < kc; p += 16) {
            _tile_loadd(4, a + p, ab);
            _tile_loadd(6, b + (size_t)p * NR, 128);
            _tile_loadd(7, b + (size_t)p * NR + 16, 128);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, a1 + p, ab);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
            if (pr < 32) {
                for (int q = 0; q < 4; q++, pr++) {
                    _mm_prefetch((const char *)(c + pr * ldc), _MM_HINT_ET0);
                    _mm_prefetch((const char *)(c + pr * ldc + 16), _MM_HINT_ET0);
                }
            }
        }
        if (full) {
            _tile_stored(0, c, cs); _tile_stored(1, c + 16, cs);
            _tile_stored(2, c + 16 * ldc, cs); _tile_stored(3, c + 16 * ldc + 16, cs);
            return;
        }
        _tile_stored(0, tb, 128); _tile_stored(1, tb + 16, 128);
        _tile_stored(2, tb + 16 * 32, 128); _tile_stored(3, tb + 16 * 32 + 16, 128);
    } else {
        _tile_zero(0); _tile_zero(1);
        for (int p = 0; p < kc; p += 16) {
            _tile_loadd(4, a + p, ab);
            _tile_loadd(6, b + (size_t)p * NR, 128);
            _tile_loadd(7, b + (size_t)p * NR + 16, 128);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
        }
        _tile_stored(0, tb, 128); _tile_stored(1, tb + 16, 128);
    }
    for (int r = 0; r < mr; r++)
        store_row(c + (size_t)r * ldc, _mm512_load_ps(tb + r * 32), _mm512_load_ps(tb + r * 32 + 16), k0, k1,
                  loadc, bias);
}

static size_t amx_scratch_bytes(int k) {
    int mc, kco;
    amx_blocking(k, &mc, &kco);
    return (size_t)mc * amx_stride(kco) * 4 + 32 * 32 * 4;
}

TGT_AMX static void gemm_amx(int n, int k, const float *a, long lda, const uint32_t *packed, const float *bias,
                             float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch) {
    (void)n;
    const int kp = kpairs(k);
    int mcmax, kco;
    amx_blocking(k, &mcmax, &kco);
    const long as = amx_stride(kco);
    uint32_t *abuf = align64(scratch);
    float *tb = (float *)(abuf + (size_t)mcmax * as);
    float biastile[16 * 32] __attribute__((aligned(64)));
    amx_config();
    for (int pc = 0; pc < kp; pc += kco) {
        const int kc = kp - pc < kco ? kp - pc : kco;
        const int loadc = pc > 0 || accumulate;
        for (int ic = m0; ic < m1; ic += mcmax) {
            const int mc = m1 - ic < mcmax ? m1 - ic : mcmax;
            pack_a(a + (size_t)ic * lda, lda, mc, k, pc, kc, abuf, as);
            for (int jc = n0; jc < n1; jc += NR) {
                const int nv = n1 - jc;
                const __mmask16 k0 = mask_n(nv), k1 = mask_n(nv - 16);
                const float *bj = pc == 0 && bias ? bias + jc : NULL;
                if (bj && !loadc && nv >= NR) {
                    __m512 b0 = _mm512_loadu_ps(bj), b1 = _mm512_loadu_ps(bj + 16);
                    for (int r = 0; r < 16; r++) {
                        _mm512_store_ps(biastile + r * 32, b0);
                        _mm512_store_ps(biastile + r * 32 + 16, b1);
                    }
                }
                const uint32_t *b = packed + ((size_t)(jc / NR) * kp + pc) * NR;
                for (int ir = 0; ir < mc; ir += 32) {
                    const int mr = mc - ir < 32 ? mc - ir : 32;
                    kernel_amx(mr, kc, abuf + (size_t)ir * as, as, b, c + (size_t)(ic + ir) * ldc + jc, ldc,
                               k0, k1, loadc, bj, biastile, tb);
                }
            }
        }
    }
    _tile_release();
}
#endif

// The f16 layout on a CPU without AVX-512 FP16 (never chosen by default: mumu_gemm_bf16_isa picks path 3 only
// where it runs): one f32 dot product per element.
static void gemm_f16_scalar(int n, int k, const float *a, long lda, const void *packed, const float *bias, float *c,
                            long ldc, int accumulate, int m0, int m1, int n0, int n1) {
    float *row = malloc((size_t)k * sizeof(float));
    if (!row) abort();
    for (int j = n0; j < n1; j++) {
        for (int e = 0; e < k; e++) row[e] = mumu_f16_packed_value(packed, n, k, j, e);
        for (int i = m0; i < m1; i++) {
            float s = 0;
            for (int e = 0; e < k; e++) s += a[(size_t)i * lda + e] * row[e];
            float *ci = c + (size_t)i * ldc + j;
            *ci = (accumulate ? *ci : 0) + s + (bias ? bias[j] : 0);
        }
    }
    free(row);
}

// ---- entry points --------------------------------------------------------------------------------

size_t mumu_bf16_gemm_scratch_bytes(int rows, int k) {
    (void)rows;
    size_t need = (size_t)MC_MAX * ASTR * 4;                       // AVX-512: packed A block
    size_t portable = (size_t)PROWS * 2 * kpairs(k) * 4;          // PROWS rows of bf16-rounded A as f32
    if (portable > need) need = portable;
    size_t avx2 = (size_t)MC2 * KC2 * 4;                          // AVX2: packed A block (f32)
    if (avx2 > need) need = avx2;
    size_t f16 = mumu_f16_gemm_scratch_bytes();                   // AVX-512 FP16: packed A block (f16) + scales
    if (f16 > need) need = f16;
#ifdef MUMU_X86
    size_t amx = amx_scratch_bytes(k);                            // AMX: packed A block + bounce tiles
    if (amx > need) need = amx;
#endif
    return need + 64;
}

void mumu_bf16_gemm_isa(int isa, int m, int n, int k, const float *a, long lda, const void *packed,
                        const float *bias, float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1,
                        void *scratch) {
    if (m0 >= m1 || n0 >= n1 || k <= 0) {
        // K = 0: A·Wᵀ is zero, C becomes bias (or keeps its value plus bias).
        if (k <= 0)
            for (int i = m0; i < m1; i++)
                for (int j = n0; j < n1; j++)
                    c[(size_t)i * ldc + j] = (accumulate ? c[(size_t)i * ldc + j] : 0) + (bias ? bias[j] : 0);
        return;
    }
    const int hw = hardware_isa();
    if (mumu_gemm_isa_uses_f16(isa)) {
        if (hw < 3) { gemm_f16_scalar(n, k, a, lda, packed, bias, c, ldc, accumulate, m0, m1, n0, n1); return; }
    } else {
        if (isa > hw) isa = hw;
        if (isa == 3) isa = 2;   // the best bf16-layout path below AMX
    }
#ifdef MUMU_X86
    if (isa == 3) { mumu_f16_gemm_avx512(n, k, a, lda, packed, bias, c, ldc, accumulate, m0, m1, n0, n1, scratch); return; }
    if (isa == 4) { gemm_amx(n, k, a, lda, packed, bias, c, ldc, accumulate, m0, m1, n0, n1, scratch); return; }
    if (isa == 2) { gemm_avx(n, k, a, lda, packed, bias, c, ldc, accumulate, m0, m1, n0, n1, scratch); return; }
    if (isa == 1) { gemm_avx2(n, k, a, lda, packed, bias, c, ldc, accumulate, m0, m1, n0, n1, scratch); return; }
#endif
    gemm_portable(m, n, k, a, lda, packed, bias, c, ldc, accumulate, m0, m1, n0, n1, scratch);
}

void mumu_bf16_gemm(int m, int n, int k, const float *a, long lda, const void *packed, const float *bias,
                    float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch) {
    mumu_bf16_gemm_isa(mumu_gemm_bf16_isa(), m, n, k, a, lda, packed, bias, c, ldc, accumulate, m0, m1, n0, n1,
                       scratch);
}
