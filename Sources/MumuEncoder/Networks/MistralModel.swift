import Foundation
import MumuSampler
import MumuTensor

/// Idefics2's text model (transformers `MistralModel`), one sequence, returning the final normed hidden states:
///
///     x = embed_tokens[ids], the `<image>` rows replaced by the image embeddings in order (masked_scatter)
///     per layer:  x += o_proj(attention(rope(q), rope(k), v of input_layernorm(x)))
///                 x += down_proj(act(gate_proj(y)) * up_proj(y)),  y = post_attention_layernorm(x)
///     out = norm(x)                                                  [T, hidden]
///
/// RMSNorm in f32 (eps from the config); RoPE in rotate-half form, inv_freq = theta^(-2i/d), positions 0 ..< T;
/// grouped-query attention (KV head h / (heads / kvHeads)), causal, keys older than `sliding_window` masked;
/// scale 1 / sqrt(head_dim); no biases. The sequence must fit `max_position_embeddings`.
public final class MistralModel: @unchecked Sendable {
    struct Layer {
        let inputNorm: [Float]
        let q: DenseWeight, k: DenseWeight, v: DenseWeight, o: DenseWeight
        let postNorm: [Float]
        let gate: DenseWeight, up: DenseWeight, down: DenseWeight
    }

    public let config: Idefics2Config.Text
    private let embedding: TokenEmbedding
    private let layers: [Layer]
    private let norm: [Float]

    /// Loads every tensor under the reader's prefix (`text_model.`), shapes checked against `config`. The token
    /// embedding is kept in the reader's precision (bf16 rows for `.bf16`).
    public init(reader: WeightReader, config: Idefics2Config.Text) throws {
        self.config = config
        let c = config.hiddenSize, qw = config.heads * config.headDim, kvw = config.kvHeads * config.headDim
        let m = config.intermediateSize
        embedding = try TokenEmbedding(reader: reader, name: "embed_tokens.weight", rows: config.vocabulary, width: c)
        (layers, norm) = try {
            func weight(_ name: String) throws -> [Float] {
                let values = try reader.floats(name, shape: [c])
                return values
            }
            var layers: [Layer] = []
            for i in 0..<config.layers {
                let l = "layers.\(i)."
                layers.append(Layer(inputNorm: try weight(l + "input_layernorm.weight"),
                                    q: try reader.linear(l + "self_attn.q_proj", inputs: c, outputs: qw, bias: false),
                                    k: try reader.linear(l + "self_attn.k_proj", inputs: c, outputs: kvw, bias: false),
                                    v: try reader.linear(l + "self_attn.v_proj", inputs: c, outputs: kvw, bias: false),
                                    o: try reader.linear(l + "self_attn.o_proj", inputs: qw, outputs: c, bias: false),
                                    postNorm: try weight(l + "post_attention_layernorm.weight"),
                                    gate: try reader.linear(l + "mlp.gate_proj", inputs: c, outputs: m, bias: false),
                                    up: try reader.linear(l + "mlp.up_proj", inputs: c, outputs: m, bias: false),
                                    down: try reader.linear(l + "mlp.down_proj", inputs: m, outputs: c, bias: false)))
            }
            return (layers, try weight("norm.weight"))
        }()
    }

    /// Bytes held by the token embedding (f32 or bf16).
    public var embeddingBytes: Int { embedding.byteCount }

    /// The final normed hidden states [T, hidden] of `ids`, whose `imageToken` positions take the rows of
    /// `imageEmbeddings` ([n_i, hidden] each), in order. The number of `imageToken` ids must equal the total rows;
    /// ids must lie in the vocabulary; T must be 1 ... max_position_embeddings.
    public func callAsFunction(ids: [Int32], imageToken: Int, imageEmbeddings: [Tensor] = []) throws -> Tensor {
        let c = config.hiddenSize, t = ids.count
        guard t > 0 else { throw EncoderError.input("text model: the token sequence is empty") }
        guard t <= config.maxPositions else {
            throw EncoderError.input("text model: the sequence has \(t) tokens, more than the model's \(config.maxPositions) positions (max_position_embeddings); shorten the prompt or use smaller images")
        }
        for (i, id) in ids.enumerated() where id < 0 || Int(id) >= config.vocabulary {
            throw EncoderError.input("text model: token \(i) has id \(id), outside the vocabulary of \(config.vocabulary)")
        }
        var imageRows = 0
        for (i, e) in imageEmbeddings.enumerated() {
            guard e.rank == 2, e.shape[1] == c else {
                throw EncoderError.input("text model: image embedding \(i) has shape \(e.shape), not [n, \(c)]")
            }
            imageRows += e.shape[0]
        }
        let imageTokens = ids.reduce(0) { $0 + (Int($1) == imageToken ? 1 : 0) }
        guard imageTokens == imageRows else {
            throw EncoderError.input("text model: the sequence has \(imageTokens) <image> tokens (id \(imageToken)) but the images give \(imageRows) embeddings (\(imageEmbeddings.map { "\($0.shape.first ?? 0)" }.joined(separator: " + ")))")
        }

        var x = Tensor(zeros: [t, c])
        x.data.withUnsafeMutableBufferPointer { xb in
            var image = 0, row = 0
            for (p, id) in ids.enumerated() {
                let dst = xb.baseAddress! + p * c
                if Int(id) == imageToken {
                    while row == imageEmbeddings[image].shape[0] { image += 1; row = 0 }
                    imageEmbeddings[image].data.withUnsafeBufferPointer { dst.update(from: $0.baseAddress! + row * c, count: c) }
                    row += 1
                } else {
                    embedding.row(Int(id), into: dst)
                }
            }
        }
        let (cos, sin) = EncoderKernels.ropeTables(positions: t, headDim: config.headDim, theta: config.ropeTheta)
        for layer in layers { forward(layer, &x, cos: cos, sin: sin) }
        return EncoderKernels.rmsNorm(x, weight: norm, eps: config.rmsNormEps)
    }

    private func forward(_ layer: Layer, _ x: inout Tensor, cos: [Float], sin: [Float]) {
        let eps = config.rmsNormEps
        let a = EncoderKernels.rmsNorm(x, weight: layer.inputNorm, eps: eps)
        var q = layer.q(a), k = layer.k(a)
        let v = layer.v(a)
        EncoderKernels.applyRope(&q, heads: config.heads, headDim: config.headDim, cos: cos, sin: sin)
        EncoderKernels.applyRope(&k, heads: config.kvHeads, headDim: config.headDim, cos: cos, sin: sin)
        let attended = maskedAttention(q: q, k: k, v: v, heads: config.heads, kvHeads: config.kvHeads,
                                       causal: true, window: config.slidingWindow, precision: .matching(layer.q))
        layer.o.apply(attended, addingInto: &x)
        let y = EncoderKernels.rmsNorm(x, weight: layer.postNorm, eps: eps)
        var g = layer.gate(y)
        EncoderKernels.gated(&g, layer.up(y), config.activation)
        layer.down.apply(g, addingInto: &x)
    }
}
