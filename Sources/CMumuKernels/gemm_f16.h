// Internal to CMumuKernels: the AVX-512 FP16 path of mumu_bf16_gemm (gemm_f16.c), called by gemm_bf16.c.
#ifndef MUMU_GEMM_F16_INTERNAL_H
#define MUMU_GEMM_F16_INTERNAL_H
#include "mumu_gemm.h"

// Scratch one call needs (any rows, any k).
size_t mumu_f16_gemm_scratch_bytes(void);
#if defined(__x86_64__)
// The arguments of mumu_bf16_gemm, with `packed` from mumu_f16_pack_*.
void mumu_f16_gemm_avx512(int n, int k, const float *a, long lda, const void *packed, const float *bias,
                          float *c, long ldc, int accumulate, int m0, int m1, int n0, int n1, void *scratch);
#endif
#endif
