// Exact dtype conversions. The scalar functions are the definition; the F16C/AVX2 paths are
// chosen at run time and are checked against the scalar ones over every 16-bit pattern.
#include "mumu_kernels.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MUMU_X86 1
#endif

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// ---- binary16 ---------------------------------------------------------------------------

float mumu_f16_to_f32_scalar(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    if (exp == 0x1F) {                               // inf or NaN (NaN made quiet)
        if (mant == 0) return u2f(sign | 0x7F800000u);
        return u2f(sign | 0x7FC00000u | (mant << 13));
    }
    if (exp == 0) {
        if (mant == 0) return u2f(sign);
        // subnormal: value = mant * 2^-24, exact in binary32
        float v = (float)mant * 5.9604644775390625e-08f;
        return u2f(sign | f2u(v));
    }
    return u2f(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t mumu_f32_to_f16_scalar(float f) {
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) {                          // inf or NaN
        if (ax == 0x7F800000u) return sign | 0x7C00;
        return sign | 0x7E00 | (uint16_t)((ax >> 13) & 0x3FF);
    }
    if (ax >= 0x477FF000u) return sign | 0x7C00;      // >= 65520 rounds to inf
    if (ax < 0x38800000u) {                           // below 2^-14: subnormal or zero
        if (ax < 0x33000000u) return sign;            // <= 2^-25 rounds to zero (tie to even 0)
        uint32_t e = ax >> 23;                        // 102..112
        uint32_t m = (ax & 0x7FFFFF) | 0x800000;      // 24-bit significand
        uint32_t shift = 126 - e;                     // value = m * 2^(e-150); f16 ulp = 2^-24
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    // normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even
    uint32_t r = ax - 0x38000000u;                    // exponent 127 -> 15
    r += 0x0FFF + ((r >> 13) & 1);
    return sign | (uint16_t)(r >> 13);
}

// ---- bfloat16 -----------------------------------------------------------------------------

static inline float bf16_to_f32(uint16_t b) {
    uint32_t x = (uint32_t)b << 16;
    if ((x & 0x7F800000u) == 0x7F800000u && (x & 0x007F0000u)) x |= 0x00400000u;   // quiet NaN
    return u2f(x);
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t x = f2u(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x0040);     // quiet NaN
    x += 0x7FFF + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

// ---- float8 e4m3fn --------------------------------------------------------------------------

static inline float f8e4m3_to_f32(uint8_t v) {
    uint32_t sign = (uint32_t)(v & 0x80) << 24;
    uint32_t exp = (v >> 3) & 0xF;
    uint32_t mant = v & 0x7;
    if (exp == 0xF && mant == 0x7) return u2f(sign | 0x7FC00000u);
    if (exp == 0) {
        float s = (float)mant * 0.001953125f;          // mant * 2^-9
        return u2f(sign | f2u(s));
    }
    return u2f(sign | ((exp + 120) << 23) | (mant << 20));
}

static inline uint8_t round_to_bits(uint32_t m, uint32_t shift) {
    // m >> shift rounded to nearest even (shift >= 1)
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (uint8_t)q;
}

static inline uint8_t f32_to_f8e4m3(float f) {
    uint32_t x = f2u(f);
    uint8_t sign = (uint8_t)((x >> 24) & 0x80);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7F;         // NaN stays NaN (S.1111.111)
    if (ax >= 0x43E00000u) return sign | 0x7E;        // >= 448 (the largest finite) and inf saturate to +-448 (torch)
    if (ax < 0x3C800000u) {                           // below 2^-6: subnormal (ulp 2^-9) or zero
        if (ax < 0x3A800000u) return sign;            // <= 2^-10 rounds to zero
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7FFFFF) | 0x800000;
        return sign | round_to_bits(m, 141 - e);      // value = m * 2^(e-150), ulp 2^-9
    }
    uint32_t r = ax - (120u << 23);                   // exponent 127 -> 7
    r += 0x7FFFF + ((r >> 20) & 1);
    return sign | (uint8_t)(r >> 20);
}

// ---- float8 e5m2 ----------------------------------------------------------------------------

static inline float f8e5m2_to_f32(uint8_t v) { return mumu_f16_to_f32_scalar((uint16_t)v << 8); }

static inline uint8_t f32_to_f8e5m2(float f) {
    uint32_t x = f2u(f);
    uint8_t sign = (uint8_t)((x >> 24) & 0x80);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7F;         // NaN
    if (ax >= 0x47700000u) return sign | 0x7C;        // >= 61440 (max 57344 + half ulp) -> inf
    if (ax < 0x38800000u) {                           // below 2^-14: subnormal (ulp 2^-16) or zero
        if (ax < 0x37000000u) return sign;            // <= 2^-17 rounds to zero
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7FFFFF) | 0x800000;
        return sign | round_to_bits(m, 134 - e);
    }
    uint32_t r = ax - (112u << 23);                   // exponent 127 -> 15
    r += 0xFFFFF + ((r >> 21) & 1);
    return sign | (uint8_t)(r >> 21);
}

// ---- dispatch -------------------------------------------------------------------------------

#ifdef MUMU_X86
__attribute__((target("avx2,f16c")))
static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) dst[i] = mumu_f16_to_f32_scalar(src[i]);
}

__attribute__((target("avx2,f16c")))
static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 f = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++) dst[i] = mumu_f32_to_f16_scalar(src[i]);
}

static int f16c_state = -1;
int mumu_has_f16c(void) {
    if (f16c_state < 0) {
        __builtin_cpu_init();
        f16c_state = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
    }
    return f16c_state;
}
#else
int mumu_has_f16c(void) { return 0; }
#endif

void mumu_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
#ifdef MUMU_X86
    if (mumu_has_f16c()) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = mumu_f16_to_f32_scalar(src[i]);
}

void mumu_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
#ifdef MUMU_X86
    if (mumu_has_f16c()) { f32_to_f16_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = mumu_f32_to_f16_scalar(src[i]);
}

void mumu_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}
void mumu_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}
void mumu_f8e4m3_to_f32(const uint8_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f8e4m3_to_f32(src[i]);
}
void mumu_f32_to_f8e4m3(const float *src, uint8_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_f8e4m3(src[i]);
}
void mumu_f8e5m2_to_f32(const uint8_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f8e5m2_to_f32(src[i]);
}
void mumu_f32_to_f8e5m2(const float *src, uint8_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_f8e5m2(src[i]);
}

// Through a small stack buffer so the fast paths above are reused without a heap float array.
#define MUMU_CHUNK 1024
void mumu_f16_to_bf16(const uint16_t *src, uint16_t *dst, size_t n) {
    float buf[MUMU_CHUNK];
    for (size_t i = 0; i < n; i += MUMU_CHUNK) {
        size_t m = n - i < MUMU_CHUNK ? n - i : MUMU_CHUNK;
        mumu_f16_to_f32(src + i, buf, m);
        mumu_f32_to_bf16(buf, dst + i, m);
    }
}
void mumu_bf16_to_f16(const uint16_t *src, uint16_t *dst, size_t n) {
    float buf[MUMU_CHUNK];
    for (size_t i = 0; i < n; i += MUMU_CHUNK) {
        size_t m = n - i < MUMU_CHUNK ? n - i : MUMU_CHUNK;
        mumu_bf16_to_f32(src + i, buf, m);
        mumu_f32_to_f16(buf, dst + i, m);
    }
}

// ---- finiteness checks ---------------------------------------------------------------------------------

size_t mumu_count_nonfinite_bf16(const uint16_t *x, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += (x[i] & 0x7F80u) == 0x7F80u;
    return bad;
}

// 32-bit counts in blocks (they vectorize 8 wide; a size_t count would not), summed into the total.
static inline size_t count_at_least(const uint32_t *u, size_t n, uint32_t limit) {
    size_t total = 0;
    for (size_t j = 0; j < n; j += (size_t)1 << 30) {
        size_t end = n - j < ((size_t)1 << 30) ? n : j + ((size_t)1 << 30);
        uint32_t c = 0;
        for (size_t i = j; i < end; i++) c += (u[i] & 0x7FFFFFFFu) >= limit;
        total += c;
    }
    return total;
}

#ifdef MUMU_X86
__attribute__((target("avx2")))
static size_t count_at_least_avx2(const uint32_t *u, size_t n, uint32_t limit) { return count_at_least(u, n, limit); }
#endif

static size_t count_at_least_dispatch(const float *x, size_t n, uint32_t limit) {
#ifdef MUMU_X86
    if (mumu_cpu_vector_level() >= 1) return count_at_least_avx2((const uint32_t *)x, n, limit);
#endif
    return count_at_least((const uint32_t *)x, n, limit);
}

size_t mumu_count_at_least_f32(const float *x, size_t n, float magnitude) {
    uint32_t m;
    memcpy(&m, &magnitude, 4);
    return count_at_least_dispatch(x, n, m & 0x7FFFFFFFu);
}

// Exponent all ones is |x| >= infinity or NaN: the same count with infinity's bits as the limit.
size_t mumu_count_nonfinite_f32(const float *x, size_t n) { return count_at_least_dispatch(x, n, 0x7F800000u); }
