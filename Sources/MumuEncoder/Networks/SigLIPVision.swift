import Foundation
import MumuFormats
import MumuSampler
import MumuTensor

/// Idefics2's SigLIP vision tower (transformers `Idefics2VisionTransformer`), one image at a time, every patch real
/// (MUMU resizes each image to multiples of the patch size, so there is no padding and no patch mask):
///
///     x = patch_embedding(pixels) + position_embedding[position ids]      (conv with stride = patch: one product
///                                                                          over the flattened patches)
///     per layer (pre-LN):  x += out_proj(attention(q, k, v of layer_norm1(x)))     (bias on q, k, v, out;
///                          x += fc2(act(fc1(layer_norm2(x))))                        non-causal, scale d^-1/2)
///     out = post_layernorm(x)                                              [nh * nw, D]
///
/// Position ids (`Idefics2VisionEmbeddings.forward`): the pretraining grid is S x S (S = image_size / patch_size);
/// an nh x nw grid maps patch (i, j) to bucket(i / nh) * S + bucket(j / nw), bucket(f) = the number of boundaries
/// arange(1/S, 1, 1/S) <= f (torch.bucketize, right=True), f clamped to 1 - 1e-6; computed in f32 as torch does.
public final class SigLIPVision: @unchecked Sendable {
    struct Layer {
        let norm1: Norm
        let q: DenseWeight, k: DenseWeight, v: DenseWeight
        let out: DenseWeight
        let norm2: Norm
        let fc1: DenseWeight
        let fc2: DenseWeight
    }

    public let config: Idefics2Config.Vision
    private let patchEmbedding: DenseWeight
    /// [S * S, D]
    private let positionEmbedding: [Float]
    private let layers: [Layer]
    private let postNorm: Norm
    /// torch.arange(1/S, 1, 1/S) in f32.
    private let boundaries: [Float]

    /// Loads every tensor under the reader's prefix (`vision_model.`), shapes checked against `config`.
    public init(reader: WeightReader, config: Idefics2Config.Vision) throws {
        self.config = config
        let d = config.hiddenSize, p = config.patchSize, s = config.patchesPerSide
        (patchEmbedding, positionEmbedding, layers, postNorm) = try {
            // Conv weight [D, C, p, p], reordered to [D, p, p, C]: the patch rows are built channels-last.
            let patch = try reader.conv("embeddings.patch_embedding", inputs: config.channels, outputs: d, kernel: p)
            let positions = try reader.floats("embeddings.position_embedding.weight", shape: [s * s, d])
            var layers: [Layer] = []
            for i in 0..<config.layers {
                let l = "encoder.layers.\(i)."
                layers.append(Layer(norm1: try reader.norm(l + "layer_norm1", channels: d),
                                    q: try reader.linear(l + "self_attn.q_proj", inputs: d, outputs: d),
                                    k: try reader.linear(l + "self_attn.k_proj", inputs: d, outputs: d),
                                    v: try reader.linear(l + "self_attn.v_proj", inputs: d, outputs: d),
                                    out: try reader.linear(l + "self_attn.out_proj", inputs: d, outputs: d),
                                    norm2: try reader.norm(l + "layer_norm2", channels: d),
                                    fc1: try reader.linear(l + "mlp.fc1", inputs: d, outputs: config.intermediateSize),
                                    fc2: try reader.linear(l + "mlp.fc2", inputs: config.intermediateSize, outputs: d)))
            }
            return (patch, positions, layers, try reader.norm("post_layernorm", channels: d))
        }()
        boundaries = Self.boundaries(s)
    }

    /// torch.arange(1/S, 1.0, 1/S) as float32, bit for bit as torch's CPU kernel makes it: length
    /// ceil((1 - 1/S) / (1/S)) in double; the elements come in vectors of 8 (two per loop step, so the first
    /// floor(n / 16) * 16 elements), each vector from a base rounded to f32, base = f32(start + i0 * step) and
    /// element j = f32(base + j * step) in double; the tail is f32(start + i * step). (Plain f32(start + i * step)
    /// differs by an ulp for S = 19, 20, 22, ...; S = 4 and idefics2-8b's 70 give the same either way.)
    static func boundaries(_ s: Int) -> [Float] {
        let step = 1.0 / Double(s)
        let n = max(0, Int(((1.0 - step) / step).rounded(.up)))
        let vectorized = n / 16 * 16
        var out: [Float] = []
        out.reserveCapacity(n)
        var i0 = 0
        while i0 < vectorized {
            let base = Float(step + step * Double(i0))
            for j in 0..<8 { out.append(Float(Double(base) + Double(j) * step)) }
            i0 += 8
        }
        for i in vectorized..<n { out.append(Float(step + step * Double(i))) }
        return out
    }

    /// The position id of every patch of an nh x nw grid, row-major (torch's `pos_ids` for a fully real image).
    public func positionIds(rows nh: Int, columns nw: Int) -> [Int] {
        Self.positionIds(rows: nh, columns: nw, boundaries: boundaries, patchesPerSide: config.patchesPerSide)
    }

    /// The same for a model with S = `patchesPerSide` position buckets a side.
    public static func positionIds(rows nh: Int, columns nw: Int, patchesPerSide s: Int) -> [Int] {
        positionIds(rows: nh, columns: nw, boundaries: boundaries(s), patchesPerSide: s)
    }

    static func positionIds(rows nh: Int, columns nw: Int, boundaries: [Float], patchesPerSide s: Int) -> [Int] {
        func buckets(_ n: Int) -> [Int] {
            let step = Float(1) / Float(n)                       // 1.0 / nb_patches (f32 true division)
            let limit = Float(1.0 - 1e-6)                        // clamp(max = 1 - 1e-6), the bound as f32
            return (0..<n).map { i -> Int in
                let f = min(Float(i) * step, limit)
                var b = 0
                while b < boundaries.count && boundaries[b] <= f { b += 1 }   // bucketize(right=True)
                return b
            }
        }
        let bh = buckets(nh), bw = buckets(nw)
        var ids = [Int](repeating: 0, count: nh * nw)
        for i in 0..<nh { for j in 0..<nw { ids[i * nw + j] = bh[i] * s + bw[j] } }
        return ids
    }

    /// pixels [C, H, W] (normalized, row-major), H and W multiples of the patch size -> [nh * nw, D].
    public func callAsFunction(pixels: [Float], height: Int, width: Int) throws -> Tensor {
        let p = config.patchSize, c = config.channels, d = config.hiddenSize
        guard height > 0, width > 0, height % p == 0, width % p == 0 else {
            throw EncoderError.input("vision encoder: image of \(width)x\(height) pixels is not a positive multiple of the patch size \(p) on both sides")
        }
        guard pixels.count == c * height * width else {
            throw EncoderError.input("vision encoder: \(pixels.count) pixel values for a \(c)x\(height)x\(width) image (want \(c * height * width))")
        }
        let nh = height / p, nw = width / p, n = nh * nw
        // Patch rows channels-last: row (i, j) holds pixels[ch, i*p + y, j*p + x] at (y * p + x) * C + ch.
        var patches = Tensor(zeros: [n, p * p * c])
        pixels.withUnsafeBufferPointer { src in
            patches.data.withUnsafeMutableBufferPointer { dst in
                for i in 0..<nh {
                    for j in 0..<nw {
                        let row = dst.baseAddress! + (i * nw + j) * p * p * c
                        for y in 0..<p {
                            for x in 0..<p {
                                for ch in 0..<c {
                                    row[(y * p + x) * c + ch] = src[(ch * height + i * p + y) * width + j * p + x]
                                }
                            }
                        }
                    }
                }
            }
        }
        var h = patchEmbedding(patches)
        let ids = positionIds(rows: nh, columns: nw)
        positionEmbedding.withUnsafeBufferPointer { pos in
            h.data.withUnsafeMutableBufferPointer { hb in
                for r in 0..<n {
                    let e = pos.baseAddress! + ids[r] * d, o = hb.baseAddress! + r * d
                    for j in 0..<d { o[j] += e[j] }
                }
            }
        }
        h = h.reshaped([1, n, d])
        for layer in layers { forward(layer, &h) }
        return postNorm.layer(h, eps: config.layerNormEps).reshaped([n, d])
    }

    private func forward(_ layer: Layer, _ x: inout Tensor) {
        let eps = config.layerNormEps
        let a = layer.norm1.layer(x, eps: eps)
        let attended = NN.attention(q: layer.q(a), k: layer.k(a), v: layer.v(a), heads: config.heads, precision: .matching(layer.q))
        layer.out.apply(attended, addingInto: &x)
        var hidden = layer.fc1(layer.norm2.layer(x, eps: eps))
        EncoderKernels.activate(&hidden, config.activation)
        layer.fc2.apply(hidden, addingInto: &x)
    }
}
