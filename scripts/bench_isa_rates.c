// Issue rates of the three 512-bit multiply-add instructions the GEMM's AVX-512 paths are built on, one core:
// vfmadd231ps (16 f32 FMAs), vfmadd231ph (32 f16 FMAs, AVX-512 FP16), vdpbf16ps (16 lanes x 2 bf16 products).
// Twelve independent accumulators each, so latency does not limit the rate. Needs AVX-512 BF16; vfmadd231ph is
// skipped on CPUs without AVX-512 FP16 (AMD's Zen 4 and 5).
//
//   gcc -O2 scripts/bench_isa_rates.c -o /tmp/isa_rates && /tmp/isa_rates
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
#define N 100000000L
#define T __attribute__((target("avx512f,avx512fp16,avx512bf16,avx512vl,avx512bw"), noinline))
#define R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define DPS(i) __m512 a##i = _mm512_set1_ps(i);
#define SPS(i) +_mm512_reduce_add_ps(a##i)

T static float rate_ps(void) {
    __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(1e-4f);
    R12(DPS)
    for (long i = 0; i < N; i++) {
#define F(i) a##i = _mm512_fmadd_ps(x, y, a##i);
        R12(F)
    }
    return 0 R12(SPS);
}

T static float rate_ph(void) {
    __m512h x = _mm512_set1_ph((_Float16)1.0f), y = _mm512_set1_ph((_Float16)0.0f);
#define DPH(i) __m512h a##i = _mm512_set1_ph((_Float16)i);
    R12(DPH)
    for (long i = 0; i < N; i++) {
#define FH(i) a##i = _mm512_fmadd_ph(x, y, a##i);
        R12(FH)
    }
#define SPH(i) +(float)a##i[0]
    return 0 R12(SPH);
}

T static float rate_bf16(void) {
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80);
    R12(DPS)
    for (long i = 0; i < N; i++) {
#define FB(i) a##i = _mm512_dpbf16_ps(a##i, x, x);
        R12(FB)
    }
    return 0 R12(SPS);
}

int main(void) {
    double t = now(); float s = rate_ps(); double ps = now() - t;
    printf("G instructions/s, one core: vfmadd231ps %.2f (%.0f GFLOP/s)", 12 * N / ps / 1e9, 12 * N / ps / 1e9 * 32);
    if (__builtin_cpu_supports("avx512fp16")) {
        t = now(); s += rate_ph(); double ph = now() - t;
        printf(", vfmadd231ph %.2f (%.0f)", 12 * N / ph / 1e9, 12 * N / ph / 1e9 * 64);
    } else {
        printf(", vfmadd231ph: no AVX-512 FP16");
    }
    t = now(); s += rate_bf16(); double bf = now() - t;
    printf(", vdpbf16ps %.2f (%.0f)  [%g]\n", 12 * N / bf / 1e9, 12 * N / bf / 1e9 * 64, s);
    return 0;
}
