import CMumuKernels
import Foundation
import MumuFormats
import MumuSampler
import MumuTensor

/// The small kernels the encoder networks need beyond MumuTensor's `NN`: activations by config name, RMSNorm,
/// rotary position embeddings and the gated product of a SiLU MLP. All f32, rows of channels ([T, C]).
enum EncoderKernels {
    static func activate(_ x: inout Tensor, _ activation: EncoderActivation) {
        switch activation {
        case .silu: NN.silu(&x)
        case .gelu: NN.gelu(&x)
        case .geluTanh: NN.geluTanh(&x)
        }
    }

    /// RMSNorm over the last dimension (transformers `MistralRMSNorm` in f32): w * (x / sqrt(mean(x^2) + eps)).
    /// The mean of squares is summed in f64 (torch sums f32 with pairwise blocks; both are within an ulp or two).
    static func rmsNorm(_ x: Tensor, weight: [Float], eps: Float) -> Tensor {
        let c = weight.count
        let rows = c == 0 ? 0 : x.count / c
        var out = Tensor(zeros: x.shape)
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                weight.withUnsafeBufferPointer { w in
                    let s = src.baseAddress!, d = dst.baseAddress!, wp = w.baseAddress!
                    KernelSupport.parallelChunks(rows, minChunk: max(1, (1 << 15) / max(1, c))) { rs in
                        for r in rs {
                            let row = s + r * c, o = d + r * c
                            var sq = 0.0
                            for i in 0..<c { let v = Double(row[i]); sq += v * v }
                            let variance = Float(sq / Double(c))
                            let inv = 1 / (variance + eps).squareRoot()
                            for i in 0..<c { o[i] = wp[i] * (row[i] * inv) }
                        }
                    }
                }
            }
        }
        return out
    }

    /// cos and sin tables [T, d/2] for positions 0 ..< T, as transformers' default RoPE builds them in f32:
    /// inv_freq[i] = 1 / theta^(2i / d), angle = f32(position * inv_freq[i]).
    static func ropeTables(positions t: Int, headDim d: Int, theta: Float) -> (cos: [Float], sin: [Float]) {
        let half = d / 2
        let invFreq = (0..<half).map { i in 1 / Foundation.pow(theta, Float(2 * i) / Float(d)) }
        var cos = [Float](repeating: 0, count: t * half), sin = cos
        for p in 0..<t {
            for i in 0..<half {
                let angle = Double(Float(p) * invFreq[i])
                cos[p * half + i] = Float(Foundation.cos(angle))
                sin[p * half + i] = Float(Foundation.sin(angle))
            }
        }
        return (cos, sin)
    }

    /// Rotates every head of x [T, heads * d] in place, rotate-half form (channel i pairs with i + d/2):
    /// x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin.
    static func applyRope(_ x: inout Tensor, heads: Int, headDim d: Int, cos: [Float], sin: [Float]) {
        let t = x.shape[0], half = d / 2, width = heads * d
        x.data.withUnsafeMutableBufferPointer { xb in
            cos.withUnsafeBufferPointer { cb in
                sin.withUnsafeBufferPointer { sb in
                    let xp = xb.baseAddress!, cp = cb.baseAddress!, sp = sb.baseAddress!
                    KernelSupport.parallelChunks(t, minChunk: max(1, (1 << 14) / max(1, width))) { rs in
                        for p in rs {
                            let c = cp + p * half, s = sp + p * half
                            for h in 0..<heads {
                                let v = xp + p * width + h * d
                                for i in 0..<half {
                                    let a = v[i], b = v[i + half]
                                    v[i] = a * c[i] - b * s[i]
                                    v[i + half] = b * c[i] + a * s[i]
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// act(gate) * up, elementwise (gate and up of the same shape), into gate.
    static func gated(_ gate: inout Tensor, _ up: Tensor, _ activation: EncoderActivation) {
        activate(&gate, activation)
        let n = gate.count
        gate.data.withUnsafeMutableBufferPointer { g in
            up.data.withUnsafeBufferPointer { u in
                let gp = g.baseAddress!, upp = u.baseAddress!
                KernelSupport.parallelChunks(n, minChunk: 1 << 15) { r in
                    for i in r { gp[i] *= upp[i] }
                }
            }
        }
    }
}

/// A token embedding table [vocabulary, width], kept in the precision the model was asked for: f32, or bf16
/// (half the memory: 262 MB for idefics2-8b's 32,003 x 4,096; rows are widened to f32 when looked up). Read
/// part by part with pread (no f32 copy of the whole table is ever held).
final class TokenEmbedding: @unchecked Sendable {
    let rows: Int
    let width: Int
    private var f32: [Float] = []
    private var bf16: [UInt16] = []

    init(reader: WeightReader, name: String, rows: Int, width: Int) throws {
        self.rows = rows
        self.width = width
        guard reader.precision == .bf16 else {
            f32 = try reader.floats(name, shape: [rows, width])
            return
        }
        let full = reader.prefix + name
        guard let found = reader.shape(name) else { throw DecoderError.missingTensor(path: reader.path, tensor: full) }
        guard found == [rows, width] else {
            throw DecoderError.wrongShape(path: reader.path, tensor: full, expected: [rows, width], found: found)
        }
        let count = rows * width
        var values = [UInt16](repeating: 0, count: count)
        var bad = 0
        let data = try reader.source.tensor(full)
        try withExtendedLifetime(data) {
            var filled = 0
            try values.withUnsafeMutableBufferPointer { out in
                try StreamExecutor.converting(data, to: .f32)({ part in
                    let n = part.count / 4
                    let src = part.baseAddress!.assumingMemoryBound(to: Float.self)
                    for i in 0..<n where !src[i].isFinite { bad += 1 }
                    mumu_f32_to_bf16(src, out.baseAddress! + filled, n)
                    filled += n
                })
            }
        }
        if bad > 0 { throw DecoderError.nonFinite(path: reader.path, tensor: full, count: bad) }
        bf16 = values
    }

    /// Copies row `id` as f32 into `out` (width floats).
    func row(_ id: Int, into out: UnsafeMutablePointer<Float>) {
        if bf16.isEmpty {
            f32.withUnsafeBufferPointer { (out).update(from: $0.baseAddress! + id * width, count: width) }
        } else {
            bf16.withUnsafeBufferPointer { mumu_bf16_to_f32($0.baseAddress! + id * width, out, width) }
        }
    }

    var byteCount: Int { f32.count * 4 + bf16.count * 2 }
}
