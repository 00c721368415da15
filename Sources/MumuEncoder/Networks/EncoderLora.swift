import Foundation
import MumuFormats
import MumuSampler
import MumuTensor

/// A LoRA for MUMU's encoder (MUMU trains the Idefics2 LM and the modality projector as rank-8 LoRAs), kept
/// unmerged: each module becomes a `LowRankAdapter` on its layer, as the sampler does for styles, so the
/// encoder's weights stay as loaded.
///
/// The file is what PEFT's `save_pretrained` writes (`adapter_model.safetensors`, with `adapter_config.json`
/// beside it) or the same factors under kohya's names:
/// - module tensors `<module>.lora_A.weight` [r, in] and `<module>.lora_B.weight` [out, r] (PEFT), or
///   `<module>.lora_down.weight` / `.lora_up.weight` and an optional `<module>.alpha` (kohya);
/// - the module path is the layer's name in the model PEFT wrapped, under any prefix (`base_model.model.`,
///   `model.`): leading components are dropped until the rest names a layer of the encoder
///   (`text_model.layers.0.self_attn.q_proj`, `connector.modality_projection.down_proj`, `vision_model...`);
/// - scale: `alpha / r` from the module's `.alpha` tensor, else PEFT's `lora_alpha / r` (`lora_alpha / sqrt(r)`
///   with `use_rslora`) from adapter_config.json beside the file or from the file's `lora_adapter_metadata`,
///   else 1. PEFT's per-module `rank_pattern` / `alpha_pattern` are refused (not read).
/// `lm_head` modules are skipped: the encoder stops at the final norm, so an LM-head LoRA changes nothing here.
public struct EncoderLora: Sendable {
    public struct Module: Sendable {
        /// The module's name in the file (without the factor suffix).
        public var name: String
        /// The layer it targets in the encoder (its weight's checkpoint name without `.weight`).
        public var layer: String
        public var rank: Int
        public var inputs: Int
        public var outputs: Int
        public var scale: Float
        let down: TensorInfo
        let up: TensorInfo
    }

    public let path: String
    public let modules: [Module]
    /// Modules the encoder has no use for (`lm_head`), by name.
    public let skipped: [String]

    /// Reads the file's headers (and adapter_config.json beside it) and matches every module to a layer among
    /// `layers` (weight names of the encoder, e.g. `Idefics2Encoder.parameters.names`) with its shape; throws
    /// `EncoderError.lora` naming the file and the module for anything that does not fit.
    public init(path: String, layers: [String: (rows: Int, cols: Int)]) throws {
        self.path = path
        func bad(_ reason: String) -> EncoderError { .lora(path: path, reason: reason) }
        guard fileExists(path) else { throw bad("no such file") }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path) } catch {
            throw bad("not a readable safetensors file: \(error)")
        }
        let peft = try Self.peftScale(path: path, metadata: file.metadata)
        let suffixes = [(".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight")]
        var parts: [String: [String: TensorInfo]] = [:]
        for info in file.tensors {
            let all = [".lora_A.weight", ".lora_B.weight", ".lora_down.weight", ".lora_up.weight", ".alpha"]
            guard let suffix = all.first(where: { info.name.hasSuffix($0) }) else {
                throw bad("tensor '\(info.name)' is not a LoRA factor (lora_A / lora_B, lora_down / lora_up or alpha)")
            }
            parts[String(info.name.dropLast(suffix.count)), default: [:]][suffix] = info
        }
        guard !parts.isEmpty else { throw bad("holds no tensors") }
        var modules: [Module] = [], skipped: [String] = []
        for name in parts.keys.sorted() {
            let p = parts[name]!
            if name.split(separator: ".").contains("lm_head") { skipped.append(name); continue }
            guard let (downKey, upKey) = suffixes.first(where: { p[$0.0] != nil || p[$0.1] != nil }),
                  let down = p[downKey], let up = p[upKey] else {
                throw bad("module '\(name)' has no down / up factor pair (lora_A + lora_B or lora_down + lora_up)")
            }
            for info in [down, up] where !info.dtype.isConvertibleFloat {
                throw bad("tensor '\(info.name)' is \(info.dtype.rawValue); LoRA factors must be F16, BF16, F32 or F64")
            }
            guard down.shape.count == 2, up.shape.count == 2, up.shape[1] == down.shape[0], down.shape[0] > 0 else {
                throw bad("module '\(name)': factors \(down.shape) and \(up.shape) are not [r, in] and [out, r]")
            }
            guard let layer = Self.layerName(for: name, in: layers) else {
                throw bad("module '\(name)' names no layer of the encoder (expected e.g. text_model.layers.0.self_attn.q_proj)")
            }
            let shape = layers[layer + ".weight"]!
            guard up.shape[0] == shape.rows, down.shape[1] == shape.cols else {
                throw bad("module '\(name)' makes a [\(up.shape[0]), \(down.shape[1])] delta; the layer \(layer) is [\(shape.rows), \(shape.cols)]")
            }
            let rank = down.shape[0]
            var scale: Float = peft?(rank) ?? 1
            if let alpha = p[".alpha"] {
                let values = try Self.values(file, alpha, path: path)
                guard values.count == 1, values[0].isFinite else { throw bad("tensor '\(alpha.name)' is not one finite number") }
                if values[0] != 0 { scale = values[0] / Float(rank) }
            }
            modules.append(Module(name: name, layer: layer, rank: rank, inputs: shape.cols, outputs: shape.rows,
                                  scale: scale, down: down, up: up))
        }
        guard !modules.isEmpty else { throw bad("has no module for the encoder (only \(skipped.joined(separator: ", ")))") }
        self.modules = modules
        self.skipped = skipped
    }

    /// Checks the file's headers against an Idefics2 folder's weight headers (before anything loads).
    public static func check(path: String, folder: Idefics2Folder) throws -> EncoderLora {
        var layers: [String: (rows: Int, cols: Int)] = [:]
        for info in folder.source.tensors where info.shape.count == 2 && info.name.hasSuffix(".weight") {
            layers[info.name] = (info.shape[0], info.shape[1])
        }
        return try EncoderLora(path: path, layers: layers)
    }

    /// Reads the file's headers against the encoder's weight shapes and attaches every module to its layer,
    /// `strength` times its scale. Returns the number of layers changed. Removing: `detach(from:)`.
    @discardableResult
    public static func attach(path: String, to encoder: Idefics2Encoder, strength: Float = 1) throws -> Int {
        var layers: [String: (rows: Int, cols: Int)] = [:]
        for name in encoder.parameters.names {
            if case let .weight(layer, rows, kernel, transposed)? = encoder.parameters[name], kernel == 1, !transposed {
                layers[name] = (rows.count, layer.cols)
            }
        }
        let lora = try EncoderLora(path: path, layers: layers)
        try lora.attach(to: encoder, strength: strength)
        return lora.modules.count
    }

    /// Attaches every module (its factors read now) to its layer in `encoder`.
    public func attach(to encoder: Idefics2Encoder, strength: Float = 1) throws {
        let file = try SafetensorsFile(path: path)
        var plan: [(DenseWeight, LowRankAdapter)] = []
        for m in modules {
            guard case let .weight(layer, rows, _, _)? = encoder.parameters[m.layer + ".weight"] else {
                throw EncoderError.lora(path: path, reason: "module '\(m.name)': the encoder has no layer \(m.layer)")
            }
            let down = try Self.values(file, m.down, path: path), up = try Self.values(file, m.up, path: path)
            let k = strength * m.scale
            plan.append((layer, LowRankAdapter(rowOffset: rows.lowerBound, rows: m.outputs, rank: m.rank, cols: m.inputs,
                                               down: down, up: up.map { $0 * k })))
        }
        for (layer, adapter) in plan { layer.lowRank.append(adapter) }
    }

    /// Takes every LoRA off the encoder's layers.
    public static func detach(from encoder: Idefics2Encoder) {
        for name in encoder.parameters.names {
            if case let .weight(layer, _, _, _)? = encoder.parameters[name] { layer.lowRank = [] }
        }
    }

    /// The layer `module` names: the module path with leading components dropped until `<rest>.weight` is a
    /// weight of the encoder.
    static func layerName(for module: String, in layers: [String: (rows: Int, cols: Int)]) -> String? {
        var parts = module.split(separator: ".", omittingEmptySubsequences: false)
        while !parts.isEmpty {
            let candidate = parts.joined(separator: ".")
            if layers[candidate + ".weight"] != nil { return candidate }
            parts.removeFirst()
        }
        return nil
    }

    /// A tensor's values as f32, every one finite.
    static func values(_ file: SafetensorsFile, _ info: TensorInfo, path: String) throws -> [Float] {
        let v: [Float]
        do { v = try file.tensor(info.name).floats() } catch {
            throw EncoderError.lora(path: path, reason: "tensor '\(info.name)': \(error)")
        }
        if let i = v.firstIndex(where: { !$0.isFinite }) {
            throw EncoderError.lora(path: path, reason: "tensor '\(info.name)' holds \(v[i]) at element \(i)")
        }
        return v
    }

    /// PEFT's scale for a module of rank r, from adapter_config.json beside the file or the file's
    /// `lora_adapter_metadata`; nil when neither exists.
    static func peftScale(path: String, metadata: [String: String]) throws -> ((Int) -> Float)? {
        let configPath = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("adapter_config.json").path
        let source: String, text: String
        if let data = FileManager.default.contents(atPath: configPath) {
            source = configPath
            text = String(decoding: data, as: UTF8.self)
        } else if let meta = metadata["lora_adapter_metadata"] {
            source = path + " (lora_adapter_metadata)"
            text = meta
        } else {
            return nil
        }
        let json: JSONValue
        do { json = try Array(text.utf8).withUnsafeBytes { try JSONParser.parse($0) } } catch {
            throw EncoderError.lora(path: source, reason: "not valid JSON: \(error)")
        }
        for field in ["rank_pattern", "alpha_pattern"] {
            if case let .object(pattern)? = json[field], !pattern.isEmpty {
                throw EncoderError.lora(path: source, reason: "\(field) (per-module ranks or alphas) is not supported")
            }
        }
        func number(_ field: String) throws -> Double? {
            switch json[field] {
            case nil, .null?: return nil
            case let .int(v)?: return Double(v)
            case let .double(v)?: return v
            default: throw EncoderError.lora(path: source, reason: "\(field) is not a number")
            }
        }
        guard let alpha = try number("lora_alpha") else { return nil }
        let rslora: Bool
        if case .bool(true)? = json["use_rslora"] { rslora = true } else { rslora = false }
        return { r in Float(rslora ? alpha / Double(r).squareRoot() : alpha / Double(r)) }
    }
}
