import CBLAS
import CMumuKernels
import Foundation
import MumuTensor

/// Multi-head attention with grouped-query heads, a causal mask and a sliding window, for the Mistral text model,
/// on the fused kernel (`NN.attention`: QKᵀ, online softmax and PV per block of query rows; AVX-512 f32, AMX or
/// AVX-512-BF16 bf16).
///
/// q [T, heads * d], k and v [T, kvHeads * d] (one sequence, rows of channels; head h at channels h*d ..< (h+1)*d).
/// Query head h reads KV head h / (heads / kvHeads) (transformers `repeat_kv`). Query i sees key j when
/// j <= i (if `causal`) and j > i - window (if `window`: transformers' `sliding_window_overlay`, so a query sees at
/// most `window` keys, itself included). Scores scaled by 1 / sqrt(d). Returns [T, heads * d].
public func maskedAttention(q: Tensor, k: Tensor, v: Tensor, heads: Int, kvHeads: Int, causal: Bool, window: Int?,
                            precision: NN.AttentionPrecision = .f32) -> Tensor {
    let out = NN.attention(q: q.reshaped([1] + q.shape), k: k.reshaped([1] + k.shape), v: v.reshaped([1] + v.shape),
                           heads: heads, kvHeads: kvHeads, causal: causal, window: window ?? 0, precision: precision)
    return out.reshaped(q.shape)
}
