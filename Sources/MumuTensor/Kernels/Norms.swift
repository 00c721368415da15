import Foundation

/// GroupNorm and LayerNorm in f32 with f64 statistics (two passes: mean, then the centred variance,
/// biased as torch uses), parallel with `concurrentPerform`.
extension NN {
    /// GroupNorm of channels-last x [N, *spatial, C] (torch `F.group_norm` on the NCHW equivalent): C is split
    /// into `groups` groups of C/groups consecutive channels; each (sample, group) is normalized over its channels
    /// and positions, then y = x_hat * weight[c] + bias[c]. With `silu` the SiLU that follows every GroupNorm in
    /// the UNet and VAE is applied in the same pass.
    ///
    /// Per sample: per-channel sums over chunks of positions in parallel (f64), combined per group; then the
    /// centred sums of squares the same way (two-pass variance, biased as torch); then one pass applying a
    /// per-channel scale and shift.
    public static func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float, silu: Bool = false) -> Tensor {
        precondition(x.rank >= 2, "groupNorm wants [N, ..., C], got \(x.shape)")
        let n = x.shape[0], c = x.shape[x.rank - 1]
        precondition(groups > 0 && c % groups == 0, "\(c) channels do not split into \(groups) groups")
        if let w = weight { precondition(w.count == c, "groupNorm weight has \(w.count) elements, want \(c)") }
        if let b = bias { precondition(b.count == c, "groupNorm bias has \(b.count) elements, want \(c)") }
        let positions = x.count / max(1, n * c)
        let cpg = c / groups
        let count = Double(cpg * positions)
        var out = Tensor(uninitialized: x.shape)
        let wArr = weight?.data, bArr = bias?.data
        let chunkRows = max(1, (1 << 14) / max(1, c))
        let chunks = (positions + chunkRows - 1) / chunkRows
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                for s in 0..<n {
                    let xs = src.baseAddress! + s * positions * c, ys = dst.baseAddress! + s * positions * c
                    // Per-channel sums of `f(x)` over all positions, chunked in parallel, summed in chunk order.
                    func channelSums(_ centre: [Double]?) -> [Double] {
                        var partial = [Double](repeating: 0, count: chunks * c)
                        partial.withUnsafeMutableBufferPointer { pb in
                            let pp = pb.baseAddress!
                            KernelSupport.parallelChunks(chunks, minChunk: 1) { cs in
                                for ch in cs {
                                    let acc = pp + ch * c
                                    for p in (ch * chunkRows)..<min(positions, (ch + 1) * chunkRows) {
                                        let row = xs + p * c
                                        if let m = centre {
                                            for j in 0..<c { let e = Double(row[j]) - m[j]; acc[j] += e * e }
                                        } else {
                                            for j in 0..<c { acc[j] += Double(row[j]) }
                                        }
                                    }
                                }
                            }
                        }
                        var total = [Double](repeating: 0, count: c)
                        for ch in 0..<chunks { for j in 0..<c { total[j] += partial[ch * c + j] } }
                        return total
                    }
                    // Group statistic broadcast back to each channel.
                    func perGroup(_ sums: [Double]) -> [Double] {
                        var g = [Double](repeating: 0, count: c)
                        for gi in 0..<groups {
                            var t = 0.0
                            for j in (gi * cpg)..<((gi + 1) * cpg) { t += sums[j] }
                            for j in (gi * cpg)..<((gi + 1) * cpg) { g[j] = t / count }
                        }
                        return g
                    }
                    let mean = perGroup(channelSums(nil))
                    let variance = perGroup(channelSums(mean))
                    var scale = [Float](repeating: 0, count: c), shift = [Float](repeating: 0, count: c)
                    for j in 0..<c {
                        let inv = 1 / (variance[j] + Double(eps)).squareRoot()
                        scale[j] = Float(inv) * (wArr?[j] ?? 1)
                        shift[j] = (bArr?[j] ?? 0) - Float(mean[j]) * scale[j]
                    }
                    scale.withUnsafeBufferPointer { sc in
                    shift.withUnsafeBufferPointer { sh in
                        let scp = sc.baseAddress!, shp = sh.baseAddress!
                        KernelSupport.parallelChunks(positions, minChunk: chunkRows) { ps in
                            for p in ps {
                                let row = xs + p * c, o = ys + p * c
                                for j in 0..<c { o[j] = row[j] * scp[j] + shp[j] }
                                if silu { siluRow(o, count: c) }
                            }
                        }
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
        var out = Tensor(uninitialized: x.shape)
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
