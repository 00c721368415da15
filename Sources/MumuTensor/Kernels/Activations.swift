import Foundation

/// Elementwise activations and nearest upsampling, f32, in place where the shape does not change.
/// Large buffers are split into chunks run with `DispatchQueue.concurrentPerform`.
extension NN {
    private static let elementwiseChunk = 1 << 15

    /// SiLU (swish): x * sigmoid(x) = x / (1 + exp(-x)), in place.
    public static func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        KernelSupport.parallelChunks(count, minChunk: elementwiseChunk) { r in
            for i in r { let v = x[i]; x[i] = v / (1 + Foundation.exp(-v)) }
        }
    }

    /// GELU, exact form: 0.5 x (1 + erf(x / sqrt 2)) (torch `F.gelu`, approximate="none"), in place.
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let invSqrt2: Float = 0.70710678118654752
        KernelSupport.parallelChunks(count, minChunk: elementwiseChunk) { r in
            for i in r { let v = x[i]; x[i] = 0.5 * v * (1 + Foundation.erf(v * invSqrt2)) }
        }
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

    /// Nearest-neighbour 2x upsampling of [N, C, H, W] to [N, C, 2H, 2W] (torch `F.interpolate(scale_factor=2, mode="nearest")`).
    public static func upsampleNearest2x(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "upsampleNearest2x wants [N, C, H, W], got \(x.shape)")
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var out = Tensor(zeros: [n, c, 2 * h, 2 * w])
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                KernelSupport.parallelChunks(n * c, minChunk: max(1, (1 << 15) / max(1, h * w))) { planes in
                    for p in planes {
                        let sp = s + p * h * w, dp = d + p * 4 * h * w
                        for y in 0..<h {
                            let row = dp + 2 * y * 2 * w
                            for xx in 0..<w { let v = sp[y * w + xx]; row[2 * xx] = v; row[2 * xx + 1] = v }
                            (row + 2 * w).update(from: row, count: 2 * w)
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
