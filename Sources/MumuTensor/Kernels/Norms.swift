import Foundation

/// GroupNorm and LayerNorm in f32 with f64 statistics (two passes: mean, then the centred variance,
/// biased as torch uses). Parallel over (sample, group) / row chunks with `concurrentPerform`.
extension NN {
    /// GroupNorm over [N, C, *spatial] (torch `F.group_norm`): C is split into `groups` groups of C/groups
    /// channels; each (sample, group) is normalized over its channels and spatial positions, then
    /// y = x_hat * weight[c] + bias[c] when weight / bias ([C]) are given.
    public static func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        precondition(x.rank >= 2, "groupNorm wants [N, C, ...], got \(x.shape)")
        let n = x.shape[0], c = x.shape[1]
        precondition(groups > 0 && c % groups == 0, "\(c) channels do not split into \(groups) groups")
        if let w = weight { precondition(w.count == c, "groupNorm weight has \(w.count) elements, want \(c)") }
        if let b = bias { precondition(b.count == c, "groupNorm bias has \(b.count) elements, want \(c)") }
        let spatial = x.count / max(1, n * c)
        let cpg = c / groups
        let groupSize = cpg * spatial
        var out = Tensor(zeros: x.shape)
        let wArr = weight?.data, bArr = bias?.data
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                KernelSupport.parallelChunks(n * groups, minChunk: max(1, (1 << 15) / max(1, groupSize))) { items in
                    for item in items {
                        let base = item * groupSize
                        var sum = 0.0
                        for i in 0..<groupSize { sum += Double(s[base + i]) }
                        let mean = sum / Double(groupSize)
                        var sq = 0.0
                        for i in 0..<groupSize { let e = Double(s[base + i]) - mean; sq += e * e }
                        let invStd = 1 / (sq / Double(groupSize) + Double(eps)).squareRoot()
                        let g = item % groups
                        for cc in 0..<cpg {
                            let ch = g * cpg + cc
                            let scale = Float(invStd) * (wArr?[ch] ?? 1)
                            let shift = (bArr?[ch] ?? 0) - Float(mean) * scale
                            let off = base + cc * spatial
                            for i in 0..<spatial { d[off + i] = s[off + i] * scale + shift }
                        }
                    }
                }
            }
        }
        return out
    }

    /// LayerNorm over the last dimension (torch `F.layer_norm(x, (D,), weight, bias, eps)`), weight / bias [D].
    public static func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        precondition(x.rank >= 1, "layerNorm wants at least one dimension")
        let dim = x.shape[x.rank - 1]
        if let w = weight { precondition(w.count == dim, "layerNorm weight has \(w.count) elements, want \(dim)") }
        if let b = bias { precondition(b.count == dim, "layerNorm bias has \(b.count) elements, want \(dim)") }
        let rows = dim == 0 ? 0 : x.count / dim
        var out = Tensor(zeros: x.shape)
        let wArr = weight?.data, bArr = bias?.data
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                KernelSupport.parallelChunks(rows, minChunk: max(1, (1 << 15) / max(1, dim))) { rs in
                    for r in rs {
                        let row = s + r * dim, o = d + r * dim
                        var sum = 0.0
                        for i in 0..<dim { sum += Double(row[i]) }
                        let mean = sum / Double(dim)
                        var sq = 0.0
                        for i in 0..<dim { let e = Double(row[i]) - mean; sq += e * e }
                        let invStd = Float(1 / (sq / Double(dim) + Double(eps)).squareRoot())
                        let m = Float(mean)
                        for i in 0..<dim {
                            o[i] = (row[i] - m) * invStd * (wArr?[i] ?? 1) + (bArr?[i] ?? 0)
                        }
                    }
                }
            }
        }
        return out
    }
}
