import CBLAS
import CMumuKernels
import Foundation
import MumuFormats
import MumuTensor

/// A CLIP text transformer: SDXL's CLIP-L (te1, transformers `CLIPTextModel`, stored in transformers' names
/// under `text_model.`) and OpenCLIP bigG (te2, stored in OpenCLIP's names: `transformer.resblocks.N`,
/// a fused `attn.in_proj_weight`, a bare `text_projection [C, P]`). One type runs both; which names to read
/// is decided from the tensors present, and the layers are identical:
///
///     x = token_embedding[ids] + position_embedding[0 ..< T]
///     per layer (pre-LN):  x += out_proj(causal_attention(q, k, v of layer_norm1(x)))
///                          x += fc2(act(fc1(layer_norm2(x))))
///     penultimate = the input of the last layer (transformers' hidden_states[-2], no final layer norm)
///     pooled      = text_projection(final_layer_norm(last hidden state)[b, eos[b]])   (bigG only)
///
/// Attention is multi-head (head dim C / heads, scale 1 / sqrt(head dim)) with a causal mask (position i sees
/// positions 0 ... i), as transformers and open_clip run it; no padding mask (SDXL pipelines pass none).
/// The weights' matrix products are `DenseWeight`s (q, k and v fused into one [3C, C]); attention runs on
/// `NN.attention(qkv:)` (causal) in the precision of those weights.
public final class CLIPTextEncoder: @unchecked Sendable {
    /// The network's shape. From the component's config.json (transformers `CLIPTextConfig`) when the
    /// checkpoint has one, else inferred from the tensors (`infer`).
    public struct Config: Equatable, Sendable {
        public enum Activation: String, Sendable {
            /// x * sigmoid(1.702 x): CLIP-L (transformers `quick_gelu`).
            case quickGELU = "quick_gelu"
            /// Exact (erf) GELU: bigG.
            case gelu = "gelu"
            /// The tanh approximation (transformers `gelu_new` / `gelu_pytorch_tanh`).
            case geluTanh = "gelu_pytorch_tanh"

            /// transformers' `hidden_act` names.
            public init?(transformersName name: String) {
                switch name {
                case "quick_gelu": self = .quickGELU
                case "gelu": self = .gelu
                case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": self = .geluTanh
                default: return nil
                }
            }
        }

        /// Hidden width C.
        public var width: Int
        public var layers: Int
        public var heads: Int
        /// MLP width.
        public var intermediate: Int
        /// Token embedding rows.
        public var vocabulary: Int
        /// Position embedding rows (the longest sequence, 77).
        public var positions: Int
        /// Width of the projected pooled output; nil when the model has no text projection (CLIP-L).
        public var projection: Int?
        public var activation: Activation
        public var layerNormEps: Float

        public init(width: Int, layers: Int, heads: Int, intermediate: Int, vocabulary: Int, positions: Int,
                    projection: Int?, activation: Activation, layerNormEps: Float = 1e-5) {
            self.width = width; self.layers = layers; self.heads = heads; self.intermediate = intermediate
            self.vocabulary = vocabulary; self.positions = positions; self.projection = projection
            self.activation = activation; self.layerNormEps = layerNormEps
        }

        public var headDim: Int { width / heads }

        /// From a transformers `CLIPTextConfig` config.json. Whether there is a text projection is decided by
        /// the tensors (CLIP-L's config carries a `projection_dim` too, but `CLIPTextModel` has no projection);
        /// its width is `projection_dim`.
        public static func from(json: JSONValue, reader: WeightReader) throws -> Config {
            func need(_ key: String) throws -> Int {
                guard let v = json.int(key) else {
                    throw DecoderError.config(path: reader.path, reason: "the text encoder's config has no integer \(key)")
                }
                return v
            }
            let actName = json.string("hidden_act") ?? "quick_gelu"
            guard let activation = Activation(transformersName: actName) else {
                throw DecoderError.config(path: reader.path, reason: "text encoder activation \(actName) is not supported (quick_gelu, gelu, gelu_new)")
            }
            let naming = try Naming.detect(reader)
            var projection: Int?
            if let shape = reader.shape(naming.projection) {
                projection = json.int("projection_dim") ?? (naming == .openCLIP ? shape.last : shape.first)
            }
            let config = Config(width: try need("hidden_size"), layers: try need("num_hidden_layers"),
                                heads: try need("num_attention_heads"), intermediate: try need("intermediate_size"),
                                vocabulary: try need("vocab_size"), positions: json.int("max_position_embeddings") ?? 77,
                                projection: projection, activation: activation,
                                layerNormEps: json.float("layer_norm_eps") ?? 1e-5)
            try config.validate(path: reader.path)
            return config
        }

        /// From the tensor shapes alone (a single file whose architecture no descriptor matches): width and
        /// vocabulary from the token embedding, positions from the position embedding, layers from the highest
        /// layer index, the MLP width from the first layer's fc1 / c_fc, the projection from text_projection.
        /// The head count is not in the shapes: it is width / `headDim`, 64 as in every CLIP SDXL uses (CLIP-L
        /// 768 / 12, bigG 1280 / 20); models with other head widths (the tiny test models have 8 and 4) need
        /// their config. The activation follows the naming: quick_gelu for transformers names (CLIP-L), exact
        /// GELU for OpenCLIP names (bigG); layer norm eps 1e-5.
        public static func infer(reader: WeightReader, headDim: Int = 64) throws -> Config {
            let naming = try Naming.detect(reader)
            let embedding = try reader.requireShape(naming.tokenEmbedding)
            guard embedding.count == 2 else {
                throw DecoderError.config(path: reader.path, reason: "\(reader.prefix + naming.tokenEmbedding) has shape \(embedding), not [vocabulary, width]")
            }
            let (vocabulary, width) = (embedding[0], embedding[1])
            let positions = try reader.requireShape(naming.positionEmbedding)
            guard positions.count == 2 else {
                throw DecoderError.config(path: reader.path, reason: "\(reader.prefix + naming.positionEmbedding) has shape \(positions), not [positions, width]")
            }
            var maxLayer = -1
            let layerPrefix = reader.prefix + naming.layerStem
            for t in reader.source.tensors where t.name.hasPrefix(layerPrefix) {
                let rest = t.name.dropFirst(layerPrefix.count)
                if let n = Int(rest.prefix { $0.isNumber }), rest.dropFirst(String(n).count).first == "." {
                    maxLayer = max(maxLayer, n)
                }
            }
            guard maxLayer >= 0 else {
                throw DecoderError.config(path: reader.path, reason: "no text encoder layers (\(layerPrefix)N.*) found")
            }
            let fc1 = try reader.requireShape(naming.layer(0) + naming.fc1 + ".weight")
            var projection: Int?
            if let p = reader.shape(naming.projection) {
                guard p.count == 2 else {
                    throw DecoderError.config(path: reader.path, reason: "\(reader.prefix + naming.projection) has shape \(p)")
                }
                projection = naming == .openCLIP ? p[1] : p[0]
            }
            guard headDim > 0, width % headDim == 0 else {
                throw DecoderError.config(path: reader.path, reason: "the text encoder's width \(width) is not a multiple of the assumed head width \(headDim); the head count cannot be inferred from shapes (give the model its config.json)")
            }
            let config = Config(width: width, layers: maxLayer + 1, heads: width / headDim, intermediate: fc1.first ?? 0,
                                vocabulary: vocabulary, positions: positions[0], projection: projection,
                                activation: naming == .openCLIP ? .gelu : .quickGELU, layerNormEps: 1e-5)
            try config.validate(path: reader.path)
            return config
        }

        func validate(path: String) throws {
            guard width > 0, layers > 0, heads > 0, width % heads == 0, intermediate > 0, vocabulary > 0, positions > 0 else {
                throw DecoderError.config(path: path, reason: "text encoder config is not runnable: width \(width), layers \(layers), heads \(heads), intermediate \(intermediate), vocabulary \(vocabulary), positions \(positions)")
            }
        }
    }

    /// The two ways the checkpoints name a CLIP text model (sgm keeps CLIP-L in transformers' names and bigG
    /// in OpenCLIP's), relative to the component's prefix.
    enum Naming: Equatable {
        case transformers, openCLIP

        static func detect(_ reader: WeightReader) throws -> Naming {
            if reader.has("token_embedding.weight") { return .openCLIP }
            if reader.has("text_model.embeddings.token_embedding.weight") { return .transformers }
            throw DecoderError.missingTensor(path: reader.path,
                tensor: reader.prefix + "text_model.embeddings.token_embedding.weight (or OpenCLIP's token_embedding.weight)")
        }

        var tokenEmbedding: String { self == .openCLIP ? "token_embedding.weight" : "text_model.embeddings.token_embedding.weight" }
        var positionEmbedding: String { self == .openCLIP ? "positional_embedding" : "text_model.embeddings.position_embedding.weight" }
        var layerStem: String { self == .openCLIP ? "transformer.resblocks." : "text_model.encoder.layers." }
        func layer(_ i: Int) -> String { layerStem + "\(i)." }
        var norm1: String { self == .openCLIP ? "ln_1" : "layer_norm1" }
        var norm2: String { self == .openCLIP ? "ln_2" : "layer_norm2" }
        var outProj: String { self == .openCLIP ? "attn.out_proj" : "self_attn.out_proj" }
        var fc1: String { self == .openCLIP ? "mlp.c_fc" : "mlp.fc1" }
        var fc2: String { self == .openCLIP ? "mlp.c_proj" : "mlp.fc2" }
        var finalNorm: String { self == .openCLIP ? "ln_final" : "text_model.final_layer_norm" }
        /// OpenCLIP: a bare [C, P] tensor (x @ P); transformers: a Linear `text_projection.weight` [P, C].
        var projection: String { self == .openCLIP ? "text_projection" : "text_projection.weight" }
    }

    struct Layer {
        let norm1: Norm
        /// q, k, v stacked by rows: [3C, C].
        let qkv: DenseWeight
        let out: DenseWeight
        let norm2: Norm
        let fc1: DenseWeight
        let fc2: DenseWeight
    }

    /// What one forward pass computes (`run`).
    public struct Output: Sendable {
        /// hidden_states[-2]: [B, T, C].
        public var penultimate: Tensor
        /// last_hidden_state (after the final layer norm) [B, T, C], when asked for.
        public var last: Tensor?
        /// The projected pooled output [B, P], when asked for (models with a text projection only).
        public var pooled: Tensor?
    }

    public let config: Config
    public let path: String
    let naming: Naming
    private let tokenEmbedding: FloatParameter
    private let positionEmbedding: FloatParameter
    private let layers: [Layer]
    private let finalNorm: Norm?
    private let projection: DenseWeight?

    /// Loads `component` (.te1 or .te2) of `checkpoint`, with the configuration from its config.json when it
    /// has one (a diffusers folder, or a file of a known architecture), else inferred from the shapes.
    public convenience init(checkpoint: DecoderCheckpoint, component: ModelComponent, precision: WeightPrecision = .f32) throws {
        guard component == .te1 || component == .te2 else {
            throw DecoderError.config(path: checkpoint.path, reason: "\(component) is not a text encoder (te1 or te2)")
        }
        let reader = try checkpoint.reader(component, precision: precision)
        let config = try checkpoint.config(component).map { try Config.from(json: $0, reader: reader) }
        try self.init(reader: reader, config: config)
        WeightMemory.modelLoaded()
    }

    /// Loads every weight through `reader` (shapes checked against `config`, NaN / infinity reported by name).
    /// Without a config it is inferred (`Config.infer`).
    public init(reader: WeightReader, config: Config? = nil) throws {
        let config = try config ?? Config.infer(reader: reader)
        try config.validate(path: reader.path)
        let naming = try Naming.detect(reader)
        self.config = config
        self.naming = naming
        path = reader.path
        let c = config.width
        tokenEmbedding = FloatParameter(try reader.floats(naming.tokenEmbedding, shape: [config.vocabulary, c]))
        positionEmbedding = FloatParameter(try reader.floats(naming.positionEmbedding, shape: [config.positions, c]))
        reader.record(naming.tokenEmbedding, .values(tokenEmbedding))
        reader.record(naming.positionEmbedding, .values(positionEmbedding))
        var layers: [Layer] = []
        for i in 0..<config.layers {
            let p = naming.layer(i)
            let qkv: DenseWeight
            if naming == .openCLIP {
                qkv = DenseWeight(f32: try reader.floats(p + "attn.in_proj_weight", shape: [3 * c, c]), rows: 3 * c, cols: c,
                                  bias: try reader.floats(p + "attn.in_proj_bias", shape: [3 * c]))
                reader.record(p + "attn.in_proj_weight", .weight(qkv, rows: 0..<3 * c, kernel: 1, transposed: false))
                reader.record(p + "attn.in_proj_bias", .bias(qkv, rows: 0..<3 * c))
            } else {
                var w: [Float] = [], b: [Float] = []
                w.reserveCapacity(3 * c * c)
                for part in ["q_proj", "k_proj", "v_proj"] {
                    w += try reader.floats(p + "self_attn.\(part).weight", shape: [c, c])
                    b += try reader.floats(p + "self_attn.\(part).bias", shape: [c])
                }
                qkv = DenseWeight(f32: w, rows: 3 * c, cols: c, bias: b)
                for (i, part) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                    reader.record(p + "self_attn.\(part).weight", .weight(qkv, rows: i * c..<(i + 1) * c, kernel: 1, transposed: false))
                    reader.record(p + "self_attn.\(part).bias", .bias(qkv, rows: i * c..<(i + 1) * c))
                }
            }
            layers.append(Layer(norm1: try reader.norm(p + naming.norm1, channels: c), qkv: qkv,
                                out: try reader.linear(p + naming.outProj, inputs: c, outputs: c),
                                norm2: try reader.norm(p + naming.norm2, channels: c),
                                fc1: try reader.linear(p + naming.fc1, inputs: c, outputs: config.intermediate),
                                fc2: try reader.linear(p + naming.fc2, inputs: config.intermediate, outputs: c)))
        }
        self.layers = layers
        if let p = config.projection {
            if naming == .openCLIP {
                let t = try reader.floats(naming.projection, shape: [c, p])  // x @ t: transpose to a [P, C] Linear
                var w = [Float](repeating: 0, count: p * c)
                for i in 0..<c { for j in 0..<p { w[j * c + i] = t[i * p + j] } }
                let transposed = DenseWeight(f32: w, rows: p, cols: c, bias: nil)
                reader.record(naming.projection, .weight(transposed, rows: 0..<p, kernel: 1, transposed: true))
                projection = transposed
            } else {
                projection = try reader.linear("text_projection", inputs: c, outputs: p, bias: false)
            }
        } else {
            projection = nil
        }
        // The final layer norm only serves the pooled output and last_hidden_state: required with a projection,
        // read when present otherwise (SDXL's CLIP-L files carry it, its penultimate output does not use it).
        finalNorm = config.projection != nil || reader.has(naming.finalNorm + ".weight")
            ? try reader.norm(naming.finalNorm, channels: c) : nil
    }

    /// The pooling position of each row by transformers' legacy rule (`eos_token_id == 2` in SDXL's configs):
    /// the first position of the row's largest id (`input_ids.argmax(-1)`; open_clip's `text.argmax(-1)`),
    /// which is `<|endoftext|>` because it is the largest id of CLIP's vocabulary. Our tokenizer returns the
    /// same position (`CLIPTokenizer.tokenize(...).eos`).
    public static func eosIndices(_ ids: [[Int32]]) -> [Int] { ids.map(CLIPTokenizer.eosPosition) }

    /// SDXL's conditioning from one encoder: `penultimate` = hidden_states[-2] [B, T, C] and, for a model with
    /// a text projection (bigG), `pooled` [B, P] taken at `eosIndex` (one position per row; nil: `eosIndices`).
    /// Without a projection (CLIP-L) the last layer is not run.
    public func encode(ids: [[Int32]], eosIndex: [Int]? = nil) throws -> (penultimate: Tensor, pooled: Tensor?) {
        let out = try run(ids: ids, eosIndex: eosIndex, last: false, pooled: projection != nil)
        return (out.penultimate, out.pooled)
    }

    /// `encode` for ids as `Int`.
    public func encode(ids: [[Int]], eosIndex: [Int]? = nil) throws -> (penultimate: Tensor, pooled: Tensor?) {
        try encode(ids: try Self.int32(ids), eosIndex: eosIndex)
    }

    /// The forward pass, computing what is asked for: the penultimate hidden states always, the final-normed
    /// last hidden state when `last`, the projected pooled output when `pooled`. The last layer runs only
    /// when one of those needs it.
    public func run(ids: [[Int32]], eosIndex: [Int]? = nil, last: Bool = false, pooled: Bool = false) throws -> Output {
        let b = ids.count
        guard b > 0 else { throw DecoderError.input("text encoder: no token rows") }
        let t = ids[0].count
        guard t > 0, t <= config.positions else {
            throw DecoderError.input("text encoder: a row of \(t) tokens; the model takes 1 to \(config.positions)")
        }
        for (r, row) in ids.enumerated() {
            guard row.count == t else {
                throw DecoderError.input("text encoder: row \(r) has \(row.count) tokens, row 0 has \(t); rows must have the same length")
            }
            if let bad = row.firstIndex(where: { $0 < 0 || Int($0) >= config.vocabulary }) {
                throw DecoderError.input("text encoder: token id \(row[bad]) (row \(r), position \(bad)) is outside the vocabulary of \(config.vocabulary) ids")
            }
        }
        if pooled && projection == nil {
            throw DecoderError.input("text encoder \(path): no text projection, so no pooled output (CLIP-L gives only hidden states)")
        }
        if (pooled || last) && finalNorm == nil {
            throw DecoderError.input("text encoder \(path): no final layer norm in this checkpoint, so no last hidden state or pooled output")
        }
        let eos = eosIndex ?? Self.eosIndices(ids)
        if pooled {
            guard eos.count == b else { throw DecoderError.input("text encoder: \(eos.count) EOS positions for \(b) rows") }
            if let bad = eos.firstIndex(where: { $0 < 0 || $0 >= t }) {
                throw DecoderError.input("text encoder: EOS position \(eos[bad]) of row \(bad) is outside 0..<\(t)")
            }
        }

        let c = config.width
        var x = Tensor(zeros: [b, t, c])
        tokenEmbedding.values.withUnsafeBufferPointer { tok in
            positionEmbedding.values.withUnsafeBufferPointer { pos in
                x.data.withUnsafeMutableBufferPointer { xb in
                    for r in 0..<b {
                        for p in 0..<t {
                            let dst = xb.baseAddress! + (r * t + p) * c
                            let e = tok.baseAddress! + Int(ids[r][p]) * c, q = pos.baseAddress! + p * c
                            for j in 0..<c { dst[j] = e[j] + q[j] }
                        }
                    }
                }
            }
        }
        for layer in layers.dropLast() { forward(layer, &x) }
        let penultimate = x
        guard last || pooled else { return Output(penultimate: penultimate, last: nil, pooled: nil) }
        forward(layers[layers.count - 1], &x)
        let norm = finalNorm!
        var output = Output(penultimate: penultimate, last: nil, pooled: nil)
        if pooled, let projection {
            var rows = Tensor(zeros: [b, c])
            for r in 0..<b {
                let src = (r * t + eos[r]) * c
                for j in 0..<c { rows.data[r * c + j] = x.data[src + j] }
            }
            output.pooled = projection(norm.layer(rows, eps: config.layerNormEps))
        }
        if last { output.last = norm.layer(x, eps: config.layerNormEps) }
        return output
    }

    /// `run` for ids as `Int`.
    public func run(ids: [[Int]], eosIndex: [Int]? = nil, last: Bool = false, pooled: Bool = false) throws -> Output {
        try run(ids: try Self.int32(ids), eosIndex: eosIndex, last: last, pooled: pooled)
    }

    private static func int32(_ ids: [[Int]]) throws -> [[Int32]] {
        try ids.map { row in
            try row.map { id in
                guard let v = Int32(exactly: id) else { throw DecoderError.input("text encoder: token id \(id) is outside the vocabulary") }
                return v
            }
        }
    }

    /// One pre-LN residual block, in place on x [B, T, C].
    private func forward(_ layer: Layer, _ x: inout Tensor) {
        let eps = config.layerNormEps
        let qkv = layer.qkv(layer.norm1.layer(x, eps: eps))
        let attended = NN.attention(qkv: qkv, heads: config.heads, causal: true, precision: .matching(layer.qkv))
        layer.out.apply(attended, addingInto: &x)
        var hidden = layer.fc1(layer.norm2.layer(x, eps: eps))
        Self.activate(&hidden, config.activation)
        layer.fc2.apply(hidden, addingInto: &x)
    }

    private static func activate(_ x: inout Tensor, _ activation: Config.Activation) {
        switch activation {
        case .gelu: NN.gelu(&x)
        case .geluTanh: NN.geluTanh(&x)
        case .quickGELU:
            // transformers QuickGELUActivation: x * sigmoid(1.702 x).
            let n = x.count
            x.data.withUnsafeMutableBufferPointer { xb in
                let p = xb.baseAddress!
                KernelSupport.parallelChunks(n, minChunk: 1 << 15) { r in
                    for i in r { let v = p[i]; p[i] = v / (1 + Foundation.exp(-1.702 * v)) }
                }
            }
        }
    }
}
