import Foundation
import MumuFormats

/// The activations the encoder networks use, by transformers' `hidden_act` names.
public enum EncoderActivation: String, Sendable {
    /// x * sigmoid(x) (`silu`, `swish`): Mistral's MLP and the modality projection.
    case silu
    /// Exact (erf) GELU (`gelu`).
    case gelu
    /// The tanh approximation (`gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`): SigLIP.
    case geluTanh = "gelu_pytorch_tanh"

    public init?(transformersName name: String) {
        switch name {
        case "silu", "swish": self = .silu
        case "gelu": self = .gelu
        case "gelu_pytorch_tanh", "gelu_new", "gelu_fast": self = .geluTanh
        default: return nil
        }
    }
}

/// An Idefics2 folder's configuration (transformers `Idefics2Config` in config.json): the SigLIP vision tower,
/// the Mistral text model, and the image token. Every value is read from the file; where the file leaves a field
/// out, the value is transformers' own default for it (config.json files written by transformers 4 omit fields
/// equal to the default: idefics2-8b's text_config has no hidden_size, layers or heads). The perceiver's config is
/// not read: MUMU does not use the perceiver.
public struct Idefics2Config: Equatable, Sendable {
    /// `vision_config` (transformers `Idefics2VisionConfig`).
    public struct Vision: Equatable, Sendable {
        public var hiddenSize: Int
        public var intermediateSize: Int
        public var layers: Int
        public var heads: Int
        public var channels: Int
        /// The pretraining image side; `imageSize / patchSize` = S position buckets a side.
        public var imageSize: Int
        public var patchSize: Int
        public var activation: EncoderActivation
        public var layerNormEps: Float

        public init(hiddenSize: Int = 768, intermediateSize: Int = 3072, layers: Int = 12, heads: Int = 12, channels: Int = 3,
                    imageSize: Int = 224, patchSize: Int = 32, activation: EncoderActivation = .geluTanh, layerNormEps: Float = 1e-6) {
            self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize; self.layers = layers; self.heads = heads
            self.channels = channels; self.imageSize = imageSize; self.patchSize = patchSize; self.activation = activation
            self.layerNormEps = layerNormEps
        }

        /// S: position buckets a side (`num_patches_per_side`), 70 for idefics2-8b.
        public var patchesPerSide: Int { imageSize / patchSize }
        public var headDim: Int { hiddenSize / heads }
    }

    /// `text_config` (transformers `MistralConfig`, with Idefics2's overrides of its defaults).
    public struct Text: Equatable, Sendable {
        public var vocabulary: Int
        public var hiddenSize: Int
        public var intermediateSize: Int
        public var layers: Int
        public var heads: Int
        public var kvHeads: Int
        public var headDim: Int
        public var activation: EncoderActivation
        /// The longest sequence the model takes (`max_position_embeddings`).
        public var maxPositions: Int
        public var rmsNormEps: Float
        public var ropeTheta: Float
        /// Keys older than this many positions are masked (`sliding_window`; nil: none).
        public var slidingWindow: Int?

        public init(vocabulary: Int = 32000, hiddenSize: Int = 4096, intermediateSize: Int = 14336, layers: Int = 32,
                    heads: Int = 32, kvHeads: Int = 8, headDim: Int? = nil, activation: EncoderActivation = .silu,
                    maxPositions: Int = 32768, rmsNormEps: Float = 1e-5, ropeTheta: Float = 10000, slidingWindow: Int? = 4096) {
            self.vocabulary = vocabulary; self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize
            self.layers = layers; self.heads = heads; self.kvHeads = kvHeads
            self.headDim = headDim ?? (heads > 0 ? hiddenSize / heads : 0)
            self.activation = activation; self.maxPositions = maxPositions; self.rmsNormEps = rmsNormEps
            self.ropeTheta = ropeTheta; self.slidingWindow = slidingWindow
        }
    }

    public var vision: Vision
    public var text: Text
    /// The `<image>` token whose embeddings the projected patches replace (`image_token_id`, 32001).
    public var imageTokenId: Int

    public init(vision: Vision, text: Text, imageTokenId: Int = 32001) {
        self.vision = vision; self.text = text; self.imageTokenId = imageTokenId
    }

    /// Parses a config.json (`path` for messages). A `model_type` other than idefics2 is `EncoderError.notIdefics2`;
    /// a field of the wrong type or an unrunnable value is `EncoderError.config` naming the field.
    public static func parse(_ json: JSONValue, path: String) throws -> Idefics2Config {
        let top = Idefics2ConfigFields(json, path: path, section: "")
        guard json.objectValue != nil else { throw EncoderError.notIdefics2(path: path, reason: "config.json is not a JSON object") }
        guard let modelType = try top.string("model_type") else {
            throw EncoderError.notIdefics2(path: path, reason: "config.json has no model_type (an Idefics2 folder says \"idefics2\")")
        }
        guard modelType == "idefics2" else {
            throw EncoderError.notIdefics2(path: path, reason: "config.json says model_type \"\(modelType)\", not \"idefics2\"")
        }

        let v = try top.section("vision_config")
        var vision = Vision()
        vision.hiddenSize = try v.int("hidden_size") ?? vision.hiddenSize
        vision.intermediateSize = try v.int("intermediate_size") ?? vision.intermediateSize
        vision.layers = try v.int("num_hidden_layers") ?? vision.layers
        vision.heads = try v.int("num_attention_heads") ?? vision.heads
        vision.channels = try v.int("num_channels") ?? vision.channels
        vision.imageSize = try v.int("image_size") ?? vision.imageSize
        vision.patchSize = try v.int("patch_size") ?? vision.patchSize
        vision.activation = try v.activation("hidden_act") ?? vision.activation
        vision.layerNormEps = try v.float("layer_norm_eps") ?? vision.layerNormEps

        let t = try top.section("text_config")
        if let type = try t.string("model_type"), type != "mistral" {
            throw EncoderError.config(path: path, field: "text_config.model_type",
                                      reason: "\"\(type)\" is not supported (mumu runs Idefics2's Mistral text model)")
        }
        var text = Text()
        text.vocabulary = try t.int("vocab_size") ?? text.vocabulary
        text.hiddenSize = try t.int("hidden_size") ?? text.hiddenSize
        text.intermediateSize = try t.int("intermediate_size") ?? text.intermediateSize
        text.layers = try t.int("num_hidden_layers") ?? text.layers
        text.heads = try t.int("num_attention_heads") ?? text.heads
        // transformers: a null num_key_value_heads means one KV head per query head.
        text.kvHeads = t.isNull("num_key_value_heads") ? text.heads : (try t.int("num_key_value_heads") ?? text.kvHeads)
        text.headDim = try t.int("head_dim") ?? (text.heads > 0 ? text.hiddenSize / text.heads : 0)
        text.activation = try t.activation("hidden_act") ?? text.activation
        text.maxPositions = try t.int("max_position_embeddings") ?? text.maxPositions
        text.rmsNormEps = try t.float("rms_norm_eps") ?? text.rmsNormEps
        // A null sliding_window is no window; an absent one is Mistral's default (4096).
        text.slidingWindow = t.isNull("sliding_window") ? nil : (try t.int("sliding_window") ?? text.slidingWindow)
        text.ropeTheta = try Self.ropeTheta(t) ?? text.ropeTheta

        let config = Idefics2Config(vision: vision, text: text, imageTokenId: try top.int("image_token_id") ?? 32001)
        try config.validate(path: path)
        return config
    }

    /// RoPE theta: transformers 5's `rope_parameters.rope_theta` (rope_type "default" only), else transformers 4's
    /// top-level `rope_theta` (with no `rope_scaling`).
    private static func ropeTheta(_ t: Idefics2ConfigFields) throws -> Float? {
        if let p = try t.optionalSection("rope_parameters") {
            if let type = try p.string("rope_type"), type != "default" {
                throw EncoderError.config(path: t.path, field: "text_config.rope_parameters.rope_type",
                                          reason: "\"\(type)\" is not supported (only the default RoPE)")
            }
            if let theta = try p.float("rope_theta") { return theta }
        }
        if let s = try t.optionalSection("rope_scaling") {
            let type = try s.string("rope_type") ?? s.string("type") ?? "?"
            if type != "default" {
                throw EncoderError.config(path: t.path, field: "text_config.rope_scaling",
                                          reason: "RoPE scaling \"\(type)\" is not supported (only the default RoPE)")
            }
        }
        return try t.float("rope_theta")
    }

    func validate(path: String) throws {
        func bad(_ field: String, _ reason: String) -> EncoderError { .config(path: path, field: field, reason: reason) }
        let v = vision, t = text
        for (field, value) in [("vision_config.hidden_size", v.hiddenSize), ("vision_config.intermediate_size", v.intermediateSize),
                               ("vision_config.num_hidden_layers", v.layers), ("vision_config.num_attention_heads", v.heads),
                               ("vision_config.num_channels", v.channels), ("vision_config.patch_size", v.patchSize),
                               ("vision_config.image_size", v.imageSize),
                               ("text_config.vocab_size", t.vocabulary), ("text_config.hidden_size", t.hiddenSize),
                               ("text_config.intermediate_size", t.intermediateSize), ("text_config.num_hidden_layers", t.layers),
                               ("text_config.num_attention_heads", t.heads), ("text_config.num_key_value_heads", t.kvHeads),
                               ("text_config.head_dim", t.headDim), ("text_config.max_position_embeddings", t.maxPositions)]
        where value <= 0 || value > 1 << 24 {
            throw bad(field, "\(value) is not a usable size")
        }
        guard v.hiddenSize % v.heads == 0 else { throw bad("vision_config.num_attention_heads", "hidden_size \(v.hiddenSize) does not split into \(v.heads) heads") }
        guard v.imageSize >= v.patchSize else { throw bad("vision_config.image_size", "\(v.imageSize) is smaller than patch_size \(v.patchSize)") }
        guard t.heads % t.kvHeads == 0 else { throw bad("text_config.num_key_value_heads", "\(t.heads) attention heads are not a multiple of \(t.kvHeads) KV heads") }
        guard t.headDim % 2 == 0 else { throw bad("text_config.head_dim", "\(t.headDim) is odd; rotary embeddings need an even head width") }
        if let w = t.slidingWindow, w <= 0 { throw bad("text_config.sliding_window", "\(w) is not a positive window") }
        guard t.ropeTheta > 0, t.ropeTheta.isFinite else { throw bad("text_config.rope_theta", "\(t.ropeTheta) is not a positive base") }
        guard v.layerNormEps >= 0, t.rmsNormEps >= 0 else { throw bad("layer_norm_eps / rms_norm_eps", "negative epsilon") }
        guard imageTokenId >= 0, imageTokenId < t.vocabulary else {
            throw bad("image_token_id", "\(imageTokenId) is outside the vocabulary of \(t.vocabulary) tokens")
        }
    }
}

/// Typed reads of one section of an Idefics2 config.json, with errors naming the field.
struct Idefics2ConfigFields {
    let json: JSONValue
    let path: String
    /// "" for the top level, else "vision_config." etc.
    let section: String

    init(_ json: JSONValue, path: String, section: String) {
        self.json = json; self.path = path; self.section = section
    }

    private func wrong(_ key: String, _ want: String) -> EncoderError {
        .config(path: path, field: section + key, reason: "is not \(want)")
    }

    func isNull(_ key: String) -> Bool { json[key] == .null }

    func int(_ key: String) throws -> Int? {
        switch json[key] {
        case nil, .null?: return nil
        case let .int(i)?: return i
        case let .double(d)? where d == d.rounded() && abs(d) < 1e15: return Int(d)
        default: throw wrong(key, "an integer")
        }
    }

    func float(_ key: String) throws -> Float? {
        switch json[key] {
        case nil, .null?: return nil
        case let .int(i)?: return Float(i)
        case let .double(d)?: return Float(d)
        default: throw wrong(key, "a number")
        }
    }

    func string(_ key: String) throws -> String? {
        switch json[key] {
        case nil, .null?: return nil
        case let .string(s)?: return s
        default: throw wrong(key, "a string")
        }
    }

    func activation(_ key: String) throws -> EncoderActivation? {
        guard let name = try string(key) else { return nil }
        guard let a = EncoderActivation(transformersName: name) else {
            throw EncoderError.config(path: path, field: section + key, reason: "activation \"\(name)\" is not supported (silu, gelu, gelu_pytorch_tanh)")
        }
        return a
    }

    /// A nested object; an absent or null one reads as {} (every field then takes its default).
    func section(_ key: String) throws -> Idefics2ConfigFields {
        try optionalSection(key) ?? Idefics2ConfigFields(.object([]), path: path, section: section + key + ".")
    }

    func optionalSection(_ key: String) throws -> Idefics2ConfigFields? {
        switch json[key] {
        case nil, .null?: return nil
        case let v? where v.objectValue != nil: return Idefics2ConfigFields(v, path: path, section: section + key + ".")
        default: throw wrong(key, "an object")
        }
    }
}
