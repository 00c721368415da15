// 16-bit-weight GEMM: C[M,N] (=|+=) A[M,K] · Wᵀ + bias, with W [N,K] stored in 16 bits in a packed panel layout,
// A and C f32. W and A are bf16 (A rounded, nearest even, as it is packed) on every path but 3, which uses f16
// scaled by powers of two (below); products are accumulated in f32.
//
// Paths, chosen at run time (mumu_gemm_bf16_isa), in order of preference from last to first:
//   0 portable C (bf16-rounded A and W, f32 accumulation),
//   1 AVX2 + FMA (W widened to f32 in registers, f32 FMA: for x86 CPUs without bf16 instructions),
//   2 AVX-512 BF16 (vdpbf16ps; CPUID.(7,1):EAX[5] + AVX512F/BW/VL + OS-enabled zmm state),
//   3 AVX-512 FP16 (vfmadd231ph on f16 operands scaled by powers of two, f16 sums of 64 products added into f32;
//     CPUID.(7,0):EDX[23] on top of 2; gemm_f16.c): for CPUs without AMX, where vdpbf16ps runs at half of f32
//     FMA's rate and vfmadd231ph at twice it. Its W has its own layout (mumu_f16_pack_*).
//   4 AMX BF16 (tdpbf16ps; CPUID.(7,0):EDX[22,24] + OS-enabled tile state + arch_prctl(ARCH_REQ_XCOMP_PERM)).
// The environment variable MUMU_GEMM_ISA=portable|avx2|avx512bf16|avx512fp16|amx, read once, caps the path at the
// one named. The bf16 instructions treat subnormal bf16 inputs as zero and flush subnormal results (DAZ/FTZ
// implied); the portable path keeps subnormals. Summation order differs between paths.
#ifndef MUMU_GEMM_H
#define MUMU_GEMM_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Panel width of the packed weight: column blocks [n0, n1) passed to mumu_bf16_gemm start at a multiple of it.
#define MUMU_BF16_PANEL 32

// The best path this CPU and OS allow, capped by MUMU_GEMM_ISA: 0 portable, 1 avx2, 2 avx512bf16, 3 avx512fp16,
// 4 amx.
int mumu_gemm_bf16_isa(void);
// The cap MUMU_GEMM_ISA sets, read once: 0 portable, 1 avx2, 2 avx512bf16, 3 avx512fp16, 4 amx (also when unset
// or unrecognised).
// Shared by the other kernels with CPU-dispatched paths (mumu_attention.h).
int mumu_gemm_isa_cap(void);
// 1 when `isa` can run here (0 always can); ignores MUMU_GEMM_ISA. For tests and benchmarks.
int mumu_gemm_bf16_isa_available(int isa);
// "portable", "avx2", "avx512bf16", "avx512fp16", "amx".
const char *mumu_gemm_bf16_isa_name(int isa);
// 1 when `isa` multiplies W in the f16 layout (mumu_f16_pack_*), 0 for the bf16 layout (mumu_bf16_pack_*).
int mumu_gemm_isa_uses_f16(int isa);

// Packed weight layout: ceil(n/32) panels of 32 columns; panel j holds kp = roundup(ceil(k/2), 16) k-pairs, and
// pair p of column c is the 32-bit word at uint32 index (j*kp + p)*32 + c, holding bf16(W[32j+c, 2p]) in its low
// half and bf16(W[32j+c, 2p+1]) in its high half. Columns >= n and k >= K are zero.
size_t mumu_bf16_packed_bytes(int n, int k);
// From f32 W [n, k] row-major: round to nearest even, subnormals kept, NaN kept (made quiet), inf kept.
void mumu_bf16_pack_f32(const float *w, int n, int k, void *packed);
// From bf16 W [n, k] row-major (bit patterns copied as they are).
void mumu_bf16_pack_bf16(const uint16_t *w, int n, int k, void *packed);
// W[row, col] back from the packed layout (bf16 bits). For tests.
uint16_t mumu_bf16_packed_at(const void *packed, int n, int k, int row, int col);

// The f16 layout (path 3): ceil(n/32) panels of roundup(k, 32) rows of 32 f16 (W[32j + c, e] / s[32j + c] at
// f16 index (j * roundup(k, 32) + e) * 32 + c), then roundup(n, 32) f32 column scales s (powers of two: 2^(e+1)
// for max |W[c, :]| in [2^e, 2^(e+1)); 1 for zero, padding and non-finite columns). f16 nearest even.
size_t mumu_f16_packed_bytes(int n, int k);
void mumu_f16_pack_f32(const float *w, int n, int k, void *packed);
void mumu_f16_pack_bf16(const uint16_t *w, int n, int k, void *packed);
// W[row, col] back from the f16 layout (the f16 value times its column's scale). For tests.
float mumu_f16_packed_value(const void *packed, int n, int k, int row, int col);

// Bytes of scratch one mumu_bf16_gemm call needs for a block of `rows` = m1 - m0 rows (any path, any alignment;
// the call aligns it itself). Each concurrent call needs its own.
size_t mumu_bf16_gemm_scratch_bytes(int rows, int k);

// Computes C[i, j] for i in [m0, m1), j in [n0, n1) only:
//   accumulate == 0: C = A·Wᵀ + bias;  accumulate != 0: C += A·Wᵀ + bias   (bias: [n] or NULL).
// A: rows of k floats at stride lda (>= k); C: rows at stride ldc (>= n). packed: from mumu_bf16_pack_*( , n, k, ),
// or from mumu_f16_pack_* where the path taken uses the f16 layout (mumu_gemm_isa_uses_f16).
// n0 must be a multiple of MUMU_BF16_PANEL; n1 a multiple of it or n. 0 <= m0 <= m1 <= m.
// Blocks that do not overlap may run concurrently (each with its own scratch of mumu_bf16_gemm_scratch_bytes).
// Any alignment works; for full speed C (and A) should start on 64 bytes with ldc (lda) a multiple of 16, so that
// C's 32-float row pieces fill whole cache lines (misaligned C costs up to half the speed on AMX when C is large).
void mumu_bf16_gemm(int m, int n, int k, const float *a, long lda, const void *packed, const float *bias,
                    float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch);
// The same on a given path, `packed` in that path's layout. A path this CPU lacks is clamped to the best one it
// has of the same layout (path 3 without AVX-512 FP16: a scalar loop over the f16 layout). For tests and
// benchmarks.
void mumu_bf16_gemm_isa(int isa, int m, int n, int k, const float *a, long lda, const void *packed,
                        const float *bias, float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1,
                        void *scratch);

#ifdef __cplusplus
}
#endif
#endif
