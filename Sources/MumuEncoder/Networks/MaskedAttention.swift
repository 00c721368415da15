import CBLAS
import CMumuKernels
import Foundation
import MumuTensor

/// Multi-head attention with grouped-query heads, a causal mask and a sliding window, for the Mistral text model
/// (the non-causal parts use `NN.attention`). One call site, so a fused kernel can replace it later.
///
/// q [T, heads * d], k and v [T, kvHeads * d] (one sequence, rows of channels; head h at channels h*d ..< (h+1)*d).
/// Query head h reads KV head h / (heads / kvHeads) (transformers `repeat_kv`). Query i sees key j when
/// j <= i (if `causal`) and j > i - window (if `window`: transformers' `sliding_window_overlay`, so a query sees at
/// most `window` keys, itself included). Scores scaled by 1 / sqrt(d), softmax over the visible keys (row maximum
/// subtracted), times v. Returns [T, heads * d].
///
/// Query rows go in blocks of 256 against only the keys the block can see (a window bounds the work to
/// T x window), one head per task; memory is one 256 x keys score buffer per task. Shapes are the caller's to get
/// right (checked by the model that calls it; not checked again here, as in `NN.attention`).
public func maskedAttention(q: Tensor, k: Tensor, v: Tensor, heads: Int, kvHeads: Int, causal: Bool, window: Int?) -> Tensor {
    let t = q.shape[0], width = q.shape[1]
    let d = width / heads, kvWidth = kvHeads * d
    let group = heads / kvHeads
    let scale = 1 / Float(d).squareRoot()
    var out = Tensor(zeros: [t, width])
    if t == 0 { return out }
    let blockRows = 256
    // Keys visible from query i: lo(i) ..< hi(i).
    @inline(__always) func lo(_ i: Int) -> Int { window.map { max(0, i - $0 + 1) } ?? 0 }
    @inline(__always) func hi(_ i: Int) -> Int { causal ? i + 1 : t }
    FlopCounter.add(4 * t * t * width / (causal ? 2 : 1))
    q.data.withUnsafeBufferPointer { qb in
    k.data.withUnsafeBufferPointer { kb in
    v.data.withUnsafeBufferPointer { vb in
    out.data.withUnsafeMutableBufferPointer { ob in
        let qp = qb.baseAddress!, kp = kb.baseAddress!, vp = vb.baseAddress!, op = ob.baseAddress!
        KernelSupport.parallelChunks(heads, minChunk: 1) { hs in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: min(blockRows, t) * t)
            defer { scores.deallocate() }
            for h in hs {
                let kvh = h / group
                let qh = qp + h * d, kh = kp + kvh * d, vh = vp + kvh * d, oh = op + h * d
                var r0 = 0
                while r0 < t {
                    let rows = min(blockRows, t - r0)
                    let k0 = lo(r0), k1 = hi(r0 + rows - 1)
                    let keys = k1 - k0
                    // scores[rows, keys] = scale * Q[r0 ..< r0+rows] K[k0 ..< k1]^T
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(keys), Int32(d), scale,
                                qh + r0 * width, Int32(width), kh + k0 * kvWidth, Int32(kvWidth), 0, scores, Int32(keys))
                    for r in 0..<rows {
                        let i = r0 + r, row = scores + r * keys
                        let a = lo(i) - k0, b = hi(i) - k0
                        if a > 0 { row.update(repeating: 0, count: a) }
                        mumu_softmax_rows(row + a, 1, b - a, keys)
                        if b < keys { (row + b).update(repeating: 0, count: keys - b) }
                    }
                    // out[r0 ..< r0+rows, head h] = P V[k0 ..< k1]
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(d), Int32(keys), 1,
                                scores, Int32(keys), vh + k0 * kvWidth, Int32(kvWidth), 0, oh + r0 * width, Int32(width))
                    r0 += rows
                }
            }
        }
    }
    }
    }
    }
    return out
}
