// Hand-written numeric kernels for mumu, with run-time CPU dispatch.
// Conversions are exact: round to nearest even, subnormals kept, inf and NaN preserved
// (NaN payloads keep their top bits and come out quiet, as x86 F16C does).
#ifndef MUMU_KERNELS_H
#define MUMU_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// IEEE binary16 <-> binary32.
void mumu_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void mumu_f32_to_f16(const float *src, uint16_t *dst, size_t n);
// bfloat16 <-> binary32.
void mumu_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void mumu_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
// float8 e4m3fn (torch.float8_e4m3fn: bias 7, no inf, NaN = S.1111.111, max 448) and
// float8 e5m2 (torch.float8_e5m2: bias 15, IEEE-like with inf) <-> binary32.
// Encoding follows torch (2.15, checked by Tests/MumuFormatsTests/Fixtures/dtypes/f8_reference.safetensors):
// round to nearest even; e4m3fn saturates every value beyond 448, inf included, to +-448 (NaN stays NaN);
// e5m2 rounds values >= 61440 to +-inf.
void mumu_f8e4m3_to_f32(const uint8_t *src, float *dst, size_t n);
void mumu_f32_to_f8e4m3(const float *src, uint8_t *dst, size_t n);
void mumu_f8e5m2_to_f32(const uint8_t *src, float *dst, size_t n);
void mumu_f32_to_f8e5m2(const float *src, uint8_t *dst, size_t n);

// How many of the n values are infinite or NaN (exponent all ones), from the bits (the f32 one is
// mumu_count_at_least_f32 at infinity).
size_t mumu_count_nonfinite_f32(const float *x, size_t n);
size_t mumu_count_nonfinite_bf16(const uint16_t *x, size_t n);
// How many of the n values have |x| >= magnitude or are NaN, from the bits (non-negative floats order like their
// bits, NaNs above infinity): a merge's check that its output fits the output dtype. AVX2 where the CPU has it.
size_t mumu_count_at_least_f32(const float *x, size_t n, float magnitude);

// Direct 16-bit conversions without a float buffer (through registers).
void mumu_f16_to_bf16(const uint16_t *src, uint16_t *dst, size_t n);
void mumu_bf16_to_f16(const uint16_t *src, uint16_t *dst, size_t n);

// Scalar reference versions (always the portable path), for tests of the dispatched ones.
float mumu_f16_to_f32_scalar(uint16_t h);
uint16_t mumu_f32_to_f16_scalar(float f);

// 1 when the F16C (+AVX2) fast path is in use on this CPU.
int mumu_has_f16c(void);

// 2: AVX-512 (F, DQ, CD, BW, VL) usable; 1: AVX2 + FMA; 0: neither (or not x86).
int mumu_cpu_vector_level(void);
// Returns the malloc heap's free pages to the OS (glibc malloc_trim; nothing elsewhere).
void mumu_release_freed_heap(void);
// From now on, serves large allocations from the malloc heap too (not mmap) and keeps freed memory for reuse
// until mumu_release_freed_heap (glibc mallopt; nothing elsewhere).
void mumu_keep_freed_heap(void);

// Network kernels (AVX-512, AVX2 + FMA, portable; accuracy in nn.c).
// Softmax of each of `rows` rows of `cols` values (row stride ld), in place, maximum subtracted.
void mumu_softmax_rows(float *p, long rows, long cols, long ld);
// SiLU and exact (erf) GELU in place; GEGLU: out[r, i] = in[r, i] * gelu(in[r, inner + i]).
void mumu_silu(float *x, long n);
void mumu_gelu(float *x, long n);
void mumu_geglu(const float *in, float *out, long rows, long inner);
// Which paths of the network kernels run: 2 AVX-512, 1 AVX2 + FMA, 0 portable.
int mumu_nn_vectorized(void);

// SHA-256, with the x86 SHA extensions where the CPU has them.
typedef struct {
    uint32_t state[8];
    uint64_t length;
    uint8_t buffer[64];
    size_t buffered;
} mumu_sha256_ctx;
void mumu_sha256_init(mumu_sha256_ctx *c);
void mumu_sha256_update(mumu_sha256_ctx *c, const void *data, size_t n);
void mumu_sha256_final(mumu_sha256_ctx *c, uint8_t out[32]);
int mumu_sha256_has_shani(void);
// Tests only: 1 forces the portable block function.
void mumu_sha256_force_portable(int on);

#ifdef __cplusplus
}
#endif
#endif
