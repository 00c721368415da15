import CBLAS
import CMumuKernels
import Foundation

extension NN {
    /// Query rows per score block in `attention` unless the caller says otherwise.
    public static let defaultAttentionBlockRows = 256

    /// Multi-head scaled dot-product attention without masks: q [B, Tq, C], k and v [B, Tk, C], C = heads * d;
    /// head h uses channels h*d ..< (h+1)*d of each token (torch's `view(B, T, heads, d)`). Per head:
    /// out = softmax(q kᵀ / sqrt(d)) v, returned as [B, Tq, C].
    ///
    /// Scores are computed `blockRows` query rows at a time against all Tk keys with `cblas_sgemm` (strided
    /// straight out of q / k / v, no copies), softmaxed row by row with the row maximum subtracted, and
    /// multiplied into v with a second sgemm. Memory bound: one score buffer of blockRows x Tk floats
    /// (256 x 4096 x 4 B = 4 MiB for SDXL's 4,096-token self-attention at 1024x1024); the full Tq x Tk
    /// matrix is never allocated.
    public static func attention(q: Tensor, k: Tensor, v: Tensor, heads: Int, blockRows: Int = defaultAttentionBlockRows) -> Tensor {
        precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention wants [B, T, C] tensors, got \(q.shape), \(k.shape), \(v.shape)")
        let (b, tq, c) = (q.shape[0], q.shape[1], q.shape[2])
        let tk = k.shape[1]
        precondition(k.shape[0] == b && v.shape[0] == b && k.shape[2] == c && v.shape == k.shape,
                     "attention shapes disagree: q \(q.shape), k \(k.shape), v \(v.shape)")
        precondition(heads > 0 && c % heads == 0, "\(c) channels do not split into \(heads) heads")
        precondition(blockRows > 0, "blockRows must be positive")
        let d = c / heads
        let scale = 1 / Float(d).squareRoot()
        var out = Tensor(zeros: q.shape)
        if tq == 0 || tk == 0 { return out }
        FlopCounter.add(4 * b * tq * tk * c)
        let block = min(blockRows, tq)
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: block * tk)
        defer { scores.deallocate() }
        q.data.withUnsafeBufferPointer { qb in
        k.data.withUnsafeBufferPointer { kb in
        v.data.withUnsafeBufferPointer { vb in
        out.data.withUnsafeMutableBufferPointer { ob in
            for s in 0..<b {
                for hd in 0..<heads {
                    let qh = qb.baseAddress! + s * tq * c + hd * d
                    let kh = kb.baseAddress! + s * tk * c + hd * d
                    let vh = vb.baseAddress! + s * tk * c + hd * d
                    let oh = ob.baseAddress! + s * tq * c + hd * d
                    var r0 = 0
                    while r0 < tq {
                        let rows = min(block, tq - r0)
                        // scores[rows, tk] = scale * Q[r0 ..< r0+rows, :d] x K[:, :d]^T
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(tk), Int32(d), scale,
                                    qh + r0 * c, Int32(c), kh, Int32(c), 0, scores, Int32(tk))
                        softmaxRows(scores, rows: rows, cols: tk)
                        // out[r0 ..< r0+rows, :d] = P x V[:, :d]
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(d), Int32(tk), 1,
                                    scores, Int32(tk), vh, Int32(c), 0, oh + r0 * c, Int32(c))
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

    /// Numerically stable softmax of each row of a [rows, cols] buffer, in place (row maximum subtracted;
    /// CMumuKernels `mumu_softmax_rows`, AVX-512 where available).
    public static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        KernelSupport.parallelChunks(rows, minChunk: max(1, (1 << 14) / max(1, cols))) { rs in
            mumu_softmax_rows(p + rs.lowerBound * cols, rs.count, cols, cols)
        }
    }
}
