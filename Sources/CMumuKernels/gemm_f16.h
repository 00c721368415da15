// Internal to CMumuKernels: the AVX-512 FP16 path of mumu_bf16_gemm (gemm_f16.c), called by gemm_bf16.c, and the
// scalings of its f16 operands, which the fused attention's f16 format (attention.c) shares.
#ifndef MUMU_GEMM_F16_INTERNAL_H
#define MUMU_GEMM_F16_INTERNAL_H
#include "mumu_gemm.h"
#include <math.h>
#include <string.h>

// The power of two s = 2^e with mx in [2^(e-1), 2^e), so |x| / s < 1 for |x| <= mx: the scale of a weight column
// (GEMM), a key or a channel of v (attention). 1 for zero and for inf / NaN (those are packed unscaled, so they
// reach the outputs).
static inline float mumu_f16_scale_above(float mx) {
    if (!(mx > 0) || !isfinite(mx)) return 1;
    int e;
    frexpf(mx, &e);              // mx = f * 2^e, f in [0.5, 1): mx < 2^e
    if (e > 127) e = 127;
    return ldexpf(1, e);
}

// Scratch one call needs (any rows, any k).
size_t mumu_f16_gemm_scratch_bytes(void);
#if defined(__x86_64__)
#include <immintrin.h>

// One piece of at most 64 values of an activation row (GEMM's A, attention's q) as the f16 products take it:
// src[0, avail) (the rest of the 64 read as zero) times 2^(8-e) for max |piece| in [2^e, 2^(e+1)), so |x| < 2^9
// and 64 products with values below 1 sum below 2^15, rounded to f16 (vcvtps2ph, nearest even) and each stored
// twice in one 32-bit word (broadcast with vbroadcastss by the kernels): `words` words (a multiple of 16, at most
// 64) into dst. Returns the inverse scale 2^(e-8); 1 (unscaled) when the piece holds inf or NaN; zero or
// subnormal pieces take e = -100 (any scale will do).
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl"))) static inline float
mumu_f16_piece_words(const float *src, int avail, int words, uint32_t *dst) {
    const __m512i absm = _mm512_set1_epi32(0x7FFFFFFF);
    __m512 x[4];
    __m512i mx = _mm512_setzero_si512();
    for (int v = 0; v < 4; v++) {
        const int left = avail - 16 * v;
        x[v] = _mm512_maskz_loadu_ps(left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1), src + 16 * v);
        mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_castps_si512(x[v]), absm));
    }
    // The largest |value| as bits: >= 0x7F800000 for inf or NaN; its exponent otherwise.
    const uint32_t top = (uint32_t)_mm512_reduce_max_epu32(mx);
    int e = (int)(top >> 23) - 127;
    if (e < -100) e = -100;
    uint32_t mulbits = (uint32_t)(8 - e + 127) << 23, invbits = (uint32_t)(e - 8 + 127) << 23;
    if (top >= 0x7F800000u) mulbits = invbits = 0x3F800000u;   // 1
    float mul, inv;
    memcpy(&mul, &mulbits, 4);
    memcpy(&inv, &invbits, 4);
    for (int v = 0; v < words / 16; v++) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(_mm512_mul_ps(x[v], _mm512_set1_ps(mul)),
                                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm512_storeu_si512((void *)(dst + 16 * v), _mm512_or_si512(w, _mm512_slli_epi32(w, 16)));
    }
    return inv;
}

// The arguments of mumu_bf16_gemm, with `packed` from mumu_f16_pack_*.
void mumu_f16_gemm_avx512(int n, int k, const float *a, long lda, const void *packed, const float *bias,
                          float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch);
#endif
#endif
