// Elementwise and row kernels of the networks (softmax, SiLU, GELU, GEGLU) with AVX-512 and AVX2 + FMA paths and a
// portable one, chosen at run time (see mumu_kernels.h). The AVX-512 exp is a degree-6 polynomial after
// range reduction by ln 2 (max relative error ~2 ulp against expf, checked in KernelTests); erf uses the
// Numerical Recipes erfc Chebyshev fit (|error| < 1.2e-7 relative to erfc), i.e. both are accurate to f32
// rounding at the scale of the models' activations.
#include "mumu_kernels.h"
#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include "simd_math.h"
#define AVX512 __attribute__((target("avx512f,avx512dq")))


// erf(x) = 1 - erfc(|x|) signed; erfc(z) = t exp(-z^2 - 1.26551223 + t(1.00002368 + ...)), t = 1 / (1 + z/2).
AVX512 static inline __m512 erf512(__m512 x) {
    __m512 z = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 q = _mm512_set1_ps(0.17087277f);
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-0.82215223f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(1.48851587f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-1.13520398f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(0.27886807f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-0.18628806f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(0.09678418f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(0.37409196f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(1.00002368f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-1.26551223f));
    q = _mm512_sub_ps(q, _mm512_mul_ps(z, z));
    __m512 erfc = _mm512_mul_ps(t, exp512(q));
    __m512 e = _mm512_sub_ps(_mm512_set1_ps(1.0f), erfc);
    // Copy the sign of x.
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(e),
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u))));
}

AVX512 static void softmax_rows_avx512(float *p, long rows, long cols, long ld) {
    for (long r = 0; r < rows; r++) {
        float *row = p + r * ld;
        __m512 vmax = _mm512_set1_ps(-INFINITY);
        long i = 0;
        for (; i + 16 <= cols; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(row + i));
        float m = _mm512_reduce_max_ps(vmax);
        for (; i < cols; i++) m = row[i] > m ? row[i] : m;
        if (m == -INFINITY) m = 0;
        __m512 vm = _mm512_set1_ps(m), vsum = _mm512_setzero_ps();
        i = 0;
        for (; i + 16 <= cols; i += 16) {
            __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(row + i), vm));
            _mm512_storeu_ps(row + i, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        if (i < cols) {
            __mmask16 k = (__mmask16)((1u << (cols - i)) - 1);
            __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + i), vm));
            e = _mm512_maskz_mov_ps(k, e);
            _mm512_mask_storeu_ps(row + i, k, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
        i = 0;
        for (; i + 16 <= cols; i += 16) _mm512_storeu_ps(row + i, _mm512_mul_ps(_mm512_loadu_ps(row + i), inv));
        if (i < cols) {
            __mmask16 k = (__mmask16)((1u << (cols - i)) - 1);
            _mm512_mask_storeu_ps(row + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row + i), inv));
        }
    }
}

// op 0: SiLU x/(1+e^-x); op 1: GELU 0.5x(1+erf(x/sqrt2)).
AVX512 static inline __m512 act512(__m512 v, int op) {
    if (op == 0) return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), v))));
    __m512 e = erf512(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

AVX512 static void act_avx512(float *x, long n, int op) {
    long i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, act512(_mm512_loadu_ps(x + i), op));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, k, act512(_mm512_maskz_loadu_ps(k, x + i), op));
    }
}

AVX512 static void geglu_avx512(const float *in, float *out, long rows, long inner) {
    for (long r = 0; r < rows; r++) {
        const float *h = in + r * 2 * inner, *g = h + inner;
        float *o = out + r * inner;
        long i = 0;
        for (; i + 16 <= inner; i += 16)
            _mm512_storeu_ps(o + i, _mm512_mul_ps(_mm512_loadu_ps(h + i), act512(_mm512_loadu_ps(g + i), 1)));
        if (i < inner) {
            __mmask16 k = (__mmask16)((1u << (inner - i)) - 1);
            _mm512_mask_storeu_ps(o + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, h + i), act512(_mm512_maskz_loadu_ps(k, g + i), 1)));
        }
    }
}

// ---- AVX2 + FMA: the same kernels on 8 lanes, tails in scalar C ----
#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256 erf256(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 z = _mm256_andnot_ps(sign, x);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    __m256 q = _mm256_set1_ps(0.17087277f);
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.82215223f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.48851587f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-1.13520398f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.27886807f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.18628806f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.09678418f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.37409196f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.00002368f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-1.26551223f));
    q = _mm256_sub_ps(q, _mm256_mul_ps(z, z));
    __m256 e = _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_mul_ps(t, exp256(q)));
    return _mm256_or_ps(e, _mm256_and_ps(x, sign));
}

AVX2 static inline __m256 act256(__m256 v, int op) {
    if (op == 0) return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
    __m256 e = erf256(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// A tail of n < 8 floats through a zero-padded vector, so every element gets the vector arithmetic (a value
// computes the same wherever it sits in a buffer).
AVX2 static inline __m256 load_tail(const float *x, long n) {
    float t[8] __attribute__((aligned(32))) = {0};
    for (long i = 0; i < n; i++) t[i] = x[i];
    return _mm256_load_ps(t);
}
AVX2 static inline void store_tail(float *x, long n, __m256 v) {
    float t[8] __attribute__((aligned(32)));
    _mm256_store_ps(t, v);
    for (long i = 0; i < n; i++) x[i] = t[i];
}

AVX2 static void act_avx2(float *x, long n, int op) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, act256(_mm256_loadu_ps(x + i), op));
    if (i < n) store_tail(x + i, n - i, act256(load_tail(x + i, n - i), op));
}

AVX2 static void geglu_avx2(const float *in, float *out, long rows, long inner) {
    for (long r = 0; r < rows; r++) {
        const float *h = in + r * 2 * inner, *g = h + inner;
        float *o = out + r * inner;
        long i = 0;
        for (; i + 8 <= inner; i += 8)
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(h + i), act256(_mm256_loadu_ps(g + i), 1)));
        if (i < inner)
            store_tail(o + i, inner - i, _mm256_mul_ps(load_tail(h + i, inner - i), act256(load_tail(g + i, inner - i), 1)));
    }
}

AVX2 static float hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

AVX2 static float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

AVX2 static void softmax_rows_avx2(float *p, long rows, long cols, long ld) {
    for (long r = 0; r < rows; r++) {
        float *row = p + r * ld;
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        long i = 0;
        for (; i + 8 <= cols; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(row + i));
        float m = hmax256(vmax);
        for (; i < cols; i++) m = row[i] > m ? row[i] : m;
        if (m == -INFINITY) m = 0;
        __m256 vm = _mm256_set1_ps(m), vsum = _mm256_setzero_ps();
        float tail = 0;
        for (i = 0; i + 8 <= cols; i += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(row + i), vm));
            _mm256_storeu_ps(row + i, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        if (i < cols) {
            __m256 e = exp256(_mm256_sub_ps(load_tail(row + i, cols - i), vm));
            store_tail(row + i, cols - i, e);
            for (long k = i; k < cols; k++) tail += row[k];
        }
        float inv = 1.0f / (hsum256(vsum) + tail);
        __m256 vi = _mm256_set1_ps(inv);
        for (i = 0; i + 8 <= cols; i += 8) _mm256_storeu_ps(row + i, _mm256_mul_ps(_mm256_loadu_ps(row + i), vi));
        for (; i < cols; i++) row[i] *= inv;
    }
}

static int use_avx2(void) {
    static int state = -1;
    if (state < 0) state = mumu_cpu_vector_level() >= 1;
    return state;
}

static int use_avx512(void) {
    static int state = -1;
    if (state < 0) state = mumu_cpu_vector_level() >= 2;
    return state;
}
#else
static int use_avx512(void) { return 0; }
static int use_avx2(void) { return 0; }
#endif

static void softmax_rows_portable(float *p, long rows, long cols, long ld) {
    for (long r = 0; r < rows; r++) {
        float *row = p + r * ld, m = -INFINITY;
        for (long i = 0; i < cols; i++) m = row[i] > m ? row[i] : m;
        if (m == -INFINITY) m = 0;
        double sum = 0;
        for (long i = 0; i < cols; i++) { float e = expf(row[i] - m); row[i] = e; sum += e; }
        float inv = (float)(1.0 / sum);
        for (long i = 0; i < cols; i++) row[i] *= inv;
    }
}

static inline float gelu1(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

void mumu_softmax_rows(float *p, long rows, long cols, long ld) {
#if defined(__x86_64__)
    if (use_avx512()) { softmax_rows_avx512(p, rows, cols, ld); return; }
    if (use_avx2()) { softmax_rows_avx2(p, rows, cols, ld); return; }
#endif
    softmax_rows_portable(p, rows, cols, ld);
}

void mumu_silu(float *x, long n) {
#if defined(__x86_64__)
    if (use_avx512()) { act_avx512(x, n, 0); return; }
    if (use_avx2()) { act_avx2(x, n, 0); return; }
#endif
    for (long i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

void mumu_gelu(float *x, long n) {
#if defined(__x86_64__)
    if (use_avx512()) { act_avx512(x, n, 1); return; }
    if (use_avx2()) { act_avx2(x, n, 1); return; }
#endif
    for (long i = 0; i < n; i++) x[i] = gelu1(x[i]);
}

void mumu_geglu(const float *in, float *out, long rows, long inner) {
#if defined(__x86_64__)
    if (use_avx512()) { geglu_avx512(in, out, rows, inner); return; }
    if (use_avx2()) { geglu_avx2(in, out, rows, inner); return; }
#endif
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < inner; i++) out[r * inner + i] = in[r * 2 * inner + i] * gelu1(in[r * 2 * inner + inner + i]);
}

int mumu_nn_vectorized(void) { return use_avx512() ? 2 : use_avx2() ? 1 : 0; }
