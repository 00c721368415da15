import Foundation
import MumuFormats
import MumuSampler
import MumuTensor

/// MUMU's connector (defined by this project: docs/formats.md, "The MUMU connector"), stored under `connector.`
/// in a mumu-decoder checkpoint. From the encoder's final hidden states [T, hidden] to the decoder's
/// conditioning:
///
///     x = proj_in(h)                                                          [T, width]
///     per layer (pre-LN, non-causal, no mask):
///         x += attn.to_out(attention(to_q, to_k, to_v of norm1(x)))         (no q/k/v bias; to_out has one)
///         x += mlp.fc2(gelu_erf(mlp.fc1(norm2(x))))
///     context = norm_out(x)                                                   [T, width]
///     pooled  = pooled_proj(mean over T of context)                           [pooled]
///
/// LayerNorm eps 1e-5 everywhere; attention heads of 64 channels (heads = width / 64) when the width is a multiple
/// of 64, else one head over the whole width; scale 1 / sqrt(head width). The number of layers and every width
/// come from the tensors' shapes (4096 -> 2048, MLP 8192, 16 layers, pooled 1280 in MUMU; a connector over a small
/// test UNet has small ones).
public final class MumuConnector: @unchecked Sendable {
    public struct Shape: Equatable, Sendable {
        /// Input width (the text model's hidden size).
        public var inputs: Int
        /// Context width (the UNet's cross-attention width).
        public var width: Int
        public var mlp: Int
        public var layers: Int
        public var pooled: Int
        public var heads: Int { Self.heads(width: width) }

        public init(inputs: Int, width: Int, mlp: Int, layers: Int, pooled: Int) {
            self.inputs = inputs; self.width = width; self.mlp = mlp; self.layers = layers; self.pooled = pooled
        }

        /// Heads of 64 when the width is a multiple of 64, else a single head of the whole width.
        public static func heads(width: Int) -> Int { width % 64 == 0 ? width / 64 : 1 }
    }

    struct Layer {
        let norm1: Norm
        let q: DenseWeight, k: DenseWeight, v: DenseWeight
        let out: DenseWeight
        let norm2: Norm
        let fc1: DenseWeight
        let fc2: DenseWeight
    }

    public static let prefix = "connector."
    public static let layerNormEps: Float = 1e-5

    public let shape: Shape
    public let path: String
    private let projIn: DenseWeight
    private let layers: [Layer]
    private let normOut: Norm
    private let pooledProj: DenseWeight

    /// The connector of a checkpoint as `DecoderCheckpoint` sees it (sgm names: `connector.*`).
    public convenience init(checkpoint: DecoderCheckpoint, precision: WeightPrecision = .f32) throws {
        try self.init(source: checkpoint.view.source, precision: precision)
    }

    /// The connector of the file or folder at `path` (any layout `mumu inspect` reads; viewed under sgm names).
    public convenience init(path: String, precision: WeightPrecision = .f32) throws {
        try self.init(source: try SGMView.open(path).source, precision: precision)
    }

    /// Reads `connector.*` from `source`: the shape from the tensors (`Shape`), then every tensor checked against it.
    /// A source without `connector.proj_in.weight` is `EncoderError.connector` saying the checkpoint has none.
    public init(source: TensorSource, precision: WeightPrecision = .f32, table: ParameterTable? = nil) throws {
        path = source.path
        let reader = WeightReader(source: source, prefix: Self.prefix, precision: precision, table: table)
        let shape = try Self.shape(reader)
        self.shape = shape
        let w = shape.width
        (projIn, layers, normOut, pooledProj) = try {
            let projIn = try reader.linear("proj_in", inputs: shape.inputs, outputs: w)
            var layers: [Layer] = []
            for i in 0..<shape.layers {
                let l = "layers.\(i)."
                layers.append(Layer(norm1: try reader.norm(l + "norm1", channels: w),
                                    q: try reader.linear(l + "attn.to_q", inputs: w, outputs: w, bias: false),
                                    k: try reader.linear(l + "attn.to_k", inputs: w, outputs: w, bias: false),
                                    v: try reader.linear(l + "attn.to_v", inputs: w, outputs: w, bias: false),
                                    out: try reader.linear(l + "attn.to_out", inputs: w, outputs: w),
                                    norm2: try reader.norm(l + "norm2", channels: w),
                                    fc1: try reader.linear(l + "mlp.fc1", inputs: w, outputs: shape.mlp),
                                    fc2: try reader.linear(l + "mlp.fc2", inputs: shape.mlp, outputs: w)))
            }
            return (projIn, layers, try reader.norm("norm_out", channels: w),
                    try reader.linear("pooled_proj", inputs: w, outputs: shape.pooled))
        }()
    }

    /// The connector's widths and depth from the shapes of proj_in, layers.0.mlp.fc1, pooled_proj and the highest
    /// layer index present.
    static func shape(_ reader: WeightReader) throws -> Shape {
        let path = reader.path
        guard let projIn = reader.shape("proj_in.weight") else {
            throw EncoderError.connector(path: path, reason: "no MUMU connector in this checkpoint (no connector.proj_in.weight; a mumu-decoder file keeps it under connector.*)")
        }
        guard projIn.count == 2, projIn[0] > 0, projIn[1] > 0 else {
            throw EncoderError.connector(path: path, reason: "connector.proj_in.weight has shape \(projIn), not [width, inputs]")
        }
        var maxLayer = -1
        let stem = Self.prefix + "layers."
        for t in reader.source.tensors where t.name.hasPrefix(stem) {
            let rest = t.name.dropFirst(stem.count)
            let digits = rest.prefix { $0.isNumber }
            if let n = Int(digits), digits.count < 7, rest.dropFirst(digits.count).first == "." { maxLayer = max(maxLayer, n) }
        }
        guard maxLayer >= 0 else {
            throw EncoderError.connector(path: path, reason: "the connector has no layers (no connector.layers.N.* tensors)")
        }
        guard let fc1 = reader.shape("layers.0.mlp.fc1.weight") else {
            throw DecoderError.missingTensor(path: path, tensor: Self.prefix + "layers.0.mlp.fc1.weight")
        }
        guard let pooled = reader.shape("pooled_proj.weight") else {
            throw DecoderError.missingTensor(path: path, tensor: Self.prefix + "pooled_proj.weight")
        }
        guard fc1.count == 2, fc1[0] > 0, pooled.count == 2, pooled[0] > 0 else {
            throw EncoderError.connector(path: path, reason: "connector.layers.0.mlp.fc1.weight \(fc1) / connector.pooled_proj.weight \(pooled) are not matrices")
        }
        return Shape(inputs: projIn[1], width: projIn[0], mlp: fc1[0], layers: maxLayer + 1, pooled: pooled[0])
    }

    /// hidden [T, inputs] (T >= 1) -> context [T, width] and pooled [pooled].
    public func callAsFunction(_ hidden: Tensor) throws -> (context: Tensor, pooled: [Float]) {
        guard hidden.rank == 2, hidden.shape[1] == shape.inputs, hidden.shape[0] > 0 else {
            throw EncoderError.input("connector (\(path)): input has shape \(hidden.shape), want [T >= 1, \(shape.inputs)] (the text model's hidden states)")
        }
        let t = hidden.shape[0], w = shape.width
        var x = projIn(hidden).reshaped([1, t, w])
        for layer in layers {
            let a = layer.norm1.layer(x, eps: Self.layerNormEps)
            let attended = NN.attention(q: layer.q(a), k: layer.k(a), v: layer.v(a), heads: shape.heads, precision: .matching(layer.q))
            layer.out.apply(attended, addingInto: &x)
            var h = layer.fc1(layer.norm2.layer(x, eps: Self.layerNormEps))
            NN.gelu(&h)
            layer.fc2.apply(h, addingInto: &x)
        }
        let context = normOut.layer(x, eps: Self.layerNormEps).reshaped([t, w])
        // Mean over T in f64, rounded to f32 (torch's mean sums f32 pairwise: within an ulp).
        var mean = [Float](repeating: 0, count: w)
        for j in 0..<w {
            var s = 0.0
            for r in 0..<t { s += Double(context.data[r * w + j]) }
            mean[j] = Float(s / Double(t))
        }
        let pooled = pooledProj(Tensor(shape: [1, w], data: mean)).data
        return (context, pooled)
    }
}
