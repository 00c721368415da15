import CMumuKernels
import Foundation

/// Elementwise activations and nearest upsampling, f32, in place where the shape does not change. SiLU, GELU and
/// GEGLU run in C (CMumuKernels nn.c: AVX-512 exp / erf, portable fallback).
/// Large buffers are split into chunks run with `DispatchQueue.concurrentPerform`.
extension NN {
    private static let elementwiseChunk = 1 << 15

    /// SiLU (swish): x * sigmoid(x) = x / (1 + exp(-x)), in place.
    public static func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        KernelSupport.parallelChunks(count, minChunk: elementwiseChunk) { r in mumu_silu(x + r.lowerBound, r.count) }
    }

    /// GELU, exact form: 0.5 x (1 + erf(x / sqrt 2)) (torch `F.gelu`, approximate="none"), in place.
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        KernelSupport.parallelChunks(count, minChunk: elementwiseChunk) { r in mumu_gelu(x + r.lowerBound, r.count) }
    }

    /// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (torch approximate="tanh"), in place.
    public static func geluTanh(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let k: Float = 0.79788456080286536  // sqrt(2 / pi)
        KernelSupport.parallelChunks(count, minChunk: elementwiseChunk) { r in
            for i in r { let v = x[i]; x[i] = 0.5 * v * (1 + Foundation.tanh(k * (v + 0.044715 * v * v * v))) }
        }
    }

    public static func silu(_ x: inout Tensor) { let n = x.count; x.data.withUnsafeMutableBufferPointer { silu($0.baseAddress!, count: n) } }
    public static func gelu(_ x: inout Tensor) { let n = x.count; x.data.withUnsafeMutableBufferPointer { gelu($0.baseAddress!, count: n) } }
    public static func geluTanh(_ x: inout Tensor) { let n = x.count; x.data.withUnsafeMutableBufferPointer { geluTanh($0.baseAddress!, count: n) } }

    /// SiLU of one contiguous row (used fused after normalizations).
    @inline(__always)
    static func siluRow(_ x: UnsafeMutablePointer<Float>, count: Int) { mumu_silu(x, count) }

    /// Nearest-neighbour 2x upsampling of channels-last [N, H, W, C] to [N, 2H, 2W, C]
    /// (torch `F.interpolate(scale_factor=2, mode="nearest")` on the NCHW equivalent).
    public static func upsampleNearest2x(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "upsampleNearest2x wants [N, H, W, C], got \(x.shape)")
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var out = Tensor(uninitialized: [n, 2 * h, 2 * w, c])
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                KernelSupport.parallelChunks(n * h, minChunk: max(1, (1 << 15) / max(1, w * c))) { rows in
                    for r in rows {
                        let sr = s + r * w * c
                        let dr = d + 2 * r * 2 * w * c  // output row 2y of sample r / h
                        for xx in 0..<w {
                            (dr + 2 * xx * c).update(from: sr + xx * c, count: c)
                            (dr + (2 * xx + 1) * c).update(from: sr + xx * c, count: c)
                        }
                        (dr + 2 * w * c).update(from: dr, count: 2 * w * c)
                    }
                }
            }
        }
        return out
    }

    /// Nearest-neighbour resize of channels-last [N, H, W, C] to [N, height, width, C] (torch's
    /// `interpolate(mode="nearest", size=)`: source index floor(dst · in / out) in f32, clamped).
    public static func upsampleNearest(_ x: Tensor, height: Int, width: Int) -> Tensor {
        precondition(x.rank == 4 && height > 0 && width > 0, "upsampleNearest wants [N, H, W, C] and a size, got \(x.shape)")
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let sy = Float(h) / Float(height), sx = Float(w) / Float(width)
        let srcX = (0..<width).map { min(Int((Float($0) * sx).rounded(.down)), w - 1) }
        var out = Tensor(uninitialized: [n, height, width, c])
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                for b in 0..<n {
                    for y in 0..<height {
                        let yy = min(Int((Float(y) * sy).rounded(.down)), h - 1)
                        let sr = s + ((b * h + yy) * w) * c, dr = d + ((b * height + y) * width) * c
                        for (xx, from) in srcX.enumerated() { (dr + xx * c).update(from: sr + from * c, count: c) }
                    }
                }
            }
        }
        return out
    }

    /// GEGLU (diffusers `GEGLU`): x [..., 2I] split into hidden = x[..., :I] and gate = x[..., I:];
    /// returns hidden * gelu(gate) (exact GELU), [..., I].
    public static func geglu(_ x: Tensor) -> Tensor {
        let two = x.shape[x.rank - 1]
        precondition(two % 2 == 0, "geglu wants an even last dimension, got \(x.shape)")
        let inner = two / 2
        var shape = x.shape
        shape[shape.count - 1] = inner
        var out = Tensor(uninitialized: shape)
        let rows = x.count / max(1, two)
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                KernelSupport.parallelChunks(rows, minChunk: max(1, (1 << 14) / max(1, inner))) { rs in
                    mumu_geglu(s + rs.lowerBound * two, d + rs.lowerBound * inner, rs.count, inner)
                }
            }
        }
        return out
    }

    /// x += y elementwise (same shapes).
    public static func add(_ x: inout Tensor, _ y: Tensor) {
        precondition(x.shape == y.shape, "add: shapes \(x.shape) and \(y.shape) differ")
        let n = x.count
        x.data.withUnsafeMutableBufferPointer { xb in
            y.data.withUnsafeBufferPointer { yb in
                let xp = xb.baseAddress!, yp = yb.baseAddress!
                KernelSupport.parallelChunks(n, minChunk: elementwiseChunk) { r in for i in r { xp[i] += yp[i] } }
            }
        }
    }

    /// x [N, *positions, C] += v [N, C] broadcast over the positions (the UNet's time embedding in a ResBlock).
    public static func addPerSample(_ x: inout Tensor, _ v: Tensor) {
        let n = x.shape[0], c = x.shape[x.rank - 1]
        precondition(v.shape == [n, c], "addPerSample: \(v.shape) does not match [\(n), \(c)] of \(x.shape)")
        let positions = x.count / max(1, n * c)
        x.data.withUnsafeMutableBufferPointer { xb in
            v.data.withUnsafeBufferPointer { vb in
                let xp = xb.baseAddress!, vp = vb.baseAddress!
                KernelSupport.parallelChunks(n * positions, minChunk: max(1, elementwiseChunk / max(1, c))) { rs in
                    for r in rs { let row = xp + r * c, add = vp + (r / positions) * c; for j in 0..<c { row[j] += add[j] } }
                }
            }
        }
    }

    /// Concatenation along the last (channel) axis: [..., Ca] and [..., Cb] -> [..., Ca + Cb].
    public static func concatChannels(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.rank == b.rank && a.shape.dropLast() == b.shape.dropLast(), "concatChannels: \(a.shape) and \(b.shape)")
        let ca = a.shape[a.rank - 1], cb = b.shape[b.rank - 1]
        var shape = a.shape
        shape[shape.count - 1] = ca + cb
        var out = Tensor(uninitialized: shape)
        let rows = a.count / max(1, ca)
        a.data.withUnsafeBufferPointer { ab in
        b.data.withUnsafeBufferPointer { bb in
        out.data.withUnsafeMutableBufferPointer { ob in
            let ap = ab.baseAddress!, bp = bb.baseAddress!, op = ob.baseAddress!
            KernelSupport.parallelChunks(rows, minChunk: max(1, elementwiseChunk / (ca + cb))) { rs in
                for r in rs {
                    (op + r * (ca + cb)).update(from: ap + r * ca, count: ca)
                    (op + r * (ca + cb) + ca).update(from: bp + r * cb, count: cb)
                }
            }
        }
        }
        }
        return out
    }

    /// Sinusoidal timestep embedding as diffusers' `get_timestep_embedding(t, dim, flip_sin_to_cos=True,
    /// downscale_freq_shift=0)` (what SDXL's UNet uses, dim 320): frequency i = exp(-ln(maxPeriod) i / (dim/2)),
    /// output row = [cos(t f_0..), sin(t f_0..)], computed in f32 step by step as torch does. Returns [t.count, dim];
    /// an odd dim gets a zero last column.
    public static func timestepEmbedding(_ timesteps: [Float], dim: Int = 320, maxPeriod: Float = 10000) -> Tensor {
        let half = dim / 2
        let logPeriod = -Float(Foundation.log(Double(maxPeriod)))
        var freqs = [Float](repeating: 0, count: half)
        for i in 0..<half { freqs[i] = Foundation.exp((logPeriod * Float(i)) / Float(half)) }
        var out = Tensor(zeros: [timesteps.count, dim])
        for (r, t) in timesteps.enumerated() {
            for i in 0..<half {
                let a = t * freqs[i]
                out.data[r * dim + i] = Foundation.cos(a)
                out.data[r * dim + half + i] = Foundation.sin(a)
            }
        }
        return out
    }
}
