// Fused multi-head scaled dot-product attention (flash-style): out = softmax(q kᵀ · scale [+ mask]) v per head,
// computed a block of query rows at a time against blocks of keys with an online softmax, never materializing the
// Tq x Tk scores.
//
// Tensors are channels-last rows: q [Tq, heads*d] at row stride ldq, k and v [Tk, kv_heads*d] at strides ldk, ldv,
// out [Tq, heads*d] at stride ldo; head h uses channels h*d ..< (h+1)*d; query head h reads kv head
// h / (heads / kv_heads) (grouped-query attention; kv_heads == heads for plain multi-head attention).
//
// Paths (`path`): 0 portable C, 1 AVX2 + FMA (register-tiled products, a vector softmax), 2 AVX-512
// (f32: FMA; bf16: vdpbf16ps), 3 AMX (bf16: tdpbf16ps; f32 runs path 2). The default one is the best the CPU
// has, capped by the GEMM's MUMU_GEMM_ISA (mumu_gemm.h): portable 0, avx2 1, avx512bf16 and avx512fp16 2, amx 3.
// A path the CPU lacks is clamped to the best one it has.
// Precision: f32 (bf16 = 0) computes in f32. bf16 (bf16 = 1) rounds q, k, v to bf16 (nearest even) and the
// softmax numerators P to bf16 before the PV product, as flash-attention does; products accumulate in f32 and
// the online softmax (maximum, exponentials, row sums, the final division) runs in f32. The AVX-512 and AMX paths
// convert with vcvtne(2)ps2bf16, which flushes subnormal inputs to zero (as the bf16 GEMM does); portable and AVX2
// keep them.
//
// f16 (bf16 = MUMU_ATTENTION_F16, for CPUs whose GEMM takes the avx512fp16 path): q, k, v rounded to f16 after
// scaling by powers of two (each 64-channel piece of a q row to |q| < 2^9, each key to |k| < 1, each channel of v
// over a block of 64 keys to |v| < 1; powers of two are exact) and P rounded to f16; QKᵀ sums each row's 64-channel
// piece and PV each block's 64 keys in f16 (vfmadd231ph; no sum can exceed 2^15), then widens into f32 times the
// scales. The softmax runs in f32. Path 2 only (AVX-512 FP16); on other paths the same packed values are
// multiplied in f32 (a fallback for tests and CPUs without AVX-512 FP16).
//
// Use: pack K and V of each kv head once (mumu_attention_pack_kv, into mumu_attention_kv_bytes), then run
// blocks of query rows of any head against them (mumu_attention_rows), each concurrent call with its own scratch.
// The packed layout depends only on the precision and the shape, not on the path.
#ifndef MUMU_ATTENTION_H
#define MUMU_ATTENTION_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int tq, tk, d;             // query rows, key rows, head dim (all > 0)
    int heads, kv_heads;       // query heads; k / v heads (heads % kv_heads == 0)
    const float *q; long ldq;  // q[i * ldq + h * d + c]
    const float *k; long ldk;  // k[j * ldk + g * d + c]
    const float *v; long ldv;
    float *out; long ldo;      // out[i * ldo + h * d + c]
    float scale;               // usually 1 / sqrt(d)
    int causal;                // query i (at position i + tk - tq) sees keys j <= its position
    int window;                // > 0: query i sees keys j > position - window only (sliding window)
    int bf16;                  // 0: f32; 1: bf16 inputs and P, f32 accumulation; 2: f16 (MUMU_ATTENTION_F16)
} mumu_attention_args;

#define MUMU_ATTENTION_F16 2

// The path used by default for this precision (see above; f16: 2 where the CPU has AVX-512 FP16 and MUMU_GEMM_ISA
// allows avx512fp16, else 0).
int mumu_attention_path(int bf16);
// 1 when `path` runs as itself here for this precision (0 always does); ignores MUMU_GEMM_ISA.
int mumu_attention_path_available(int path, int bf16);
// "portable", "avx2", "avx512", "amx".
const char *mumu_attention_path_name(int path);

// Bytes of packed K and V for one kv head (64-byte aligned buffer required).
size_t mumu_attention_kv_bytes(const mumu_attention_args *a);
// Packs K and V of kv head `g` into `packed` (mumu_attention_kv_bytes, 64-byte aligned).
void mumu_attention_pack_kv(const mumu_attention_args *a, int g, void *packed);
// Bytes of scratch one mumu_attention_rows call needs (any alignment; the call aligns it).
size_t mumu_attention_scratch_bytes(const mumu_attention_args *a);
// out rows [r0, r1) of head h, with K / V of its kv head packed in `packed`. Single-threaded.
void mumu_attention_rows(const mumu_attention_args *a, int path, int h, int r0, int r1, const void *packed,
                         void *scratch);

#ifdef __cplusplus
}
#endif
#endif
