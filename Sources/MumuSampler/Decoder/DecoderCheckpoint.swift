import Foundation
import MumuFormats

/// A checkpoint opened for inference: any file or folder `mumu inspect` reads, viewed under sgm names,
/// with its detected architecture and, per component, a `WeightReader` and the configuration to build the
/// model from (the diffusers `config.json` of a folder, else the matched architecture descriptor's; when
/// neither exists the model infers its configuration from the tensor shapes).
public final class DecoderCheckpoint: @unchecked Sendable {
    public let path: String
    public let view: SGMView
    public let detection: ModelDetection
    /// The descriptor of the detected architecture (nil for an unknown one).
    public let descriptor: ArchitectureDescriptor?
    /// When set, every reader made by `reader(_:precision:)` records where it put each tensor (for styles).
    public var parameters: ParameterTable?

    /// The sgm prefix of each SDXL component (`SGMPrefix`, the one list of them).
    public static let prefixes: [ModelComponent: String] = [
        .unet: SGMPrefix.unet.rawValue, .vae: SGMPrefix.vae.rawValue, .te1: SGMPrefix.te1.rawValue, .te2: SGMPrefix.te2.rawValue,
    ]

    public init(path: String) throws {
        self.path = path
        view = try SGMView.open(path)
        detection = ModelDetector.detect(view.source.tensors, metadata: view.original.metadata)
        descriptor = detection.architecture.flatMap(Architectures.named)
        if descriptor?.kind == .encoder || detection.family == "idefics2" {
            throw DecoderError.config(path: path, reason: "this is MUMU's encoder (an Idefics2 folder), not a decoder: give it as the encoder, and a mumu-decoder checkpoint as the checkpoint")
        }
    }

    /// Whether the checkpoint holds any tensor of `component`.
    public func has(_ component: ModelComponent) -> Bool {
        let prefix = Self.prefixes[component]!
        return view.source.tensors.contains { $0.name.hasPrefix(prefix) }
    }

    /// The reader for one component, or `DecoderError.missingComponent` naming what the file holds instead.
    public func reader(_ component: ModelComponent, precision: WeightPrecision = .f32) throws -> WeightReader {
        guard has(component) else {
            let present = ModelComponent.allCases.filter(has).map(\.rawValue)
            let what: String
            switch component {
            case .te1: what = "text encoder CLIP-L (\(Self.prefixes[.te1]!)*)"
            case .te2: what = "text encoder OpenCLIP bigG (\(Self.prefixes[.te2]!)*)"
            case .unet: what = "UNet (\(Self.prefixes[.unet]!)*)"
            case .vae: what = "VAE (\(Self.prefixes[.vae]!)*)"
            }
            let borrow = component == .vae ? "; borrow one from another file (a VAE)" : component == .te1 || component == .te2 ? "; borrow them from another checkpoint (text encoders)" : ""
            throw DecoderError.missingComponent(path: path, component: what,
                detail: (present.isEmpty ? "no SDXL component found at all" : "it holds: " + present.joined(separator: ", ")) + borrow)
        }
        return WeightReader(source: view.source, prefix: Self.prefixes[component]!, precision: precision, table: parameters)
    }

    /// The diffusers-style configuration of `component`: the folder's config.json, else the descriptor's.
    public func config(_ component: ModelComponent) -> JSONValue? {
        if let c = view.diffusersConfig(component) { return c }
        return descriptor?.component(component.rawValue)?.config
    }
}

/// Reading typed fields of a diffusers / transformers config.json.
extension JSONValue {
    func int(_ key: String) -> Int? {
        switch self[key] {
        case let .int(i)?: return i
        case let .double(d)? where d == d.rounded(): return Int(d)
        default: return nil
        }
    }
    func float(_ key: String) -> Float? {
        switch self[key] {
        case let .int(i)?: return Float(i)
        case let .double(d)?: return Float(d)
        default: return nil
        }
    }
    func bool(_ key: String) -> Bool? {
        if case let .bool(b)? = self[key] { return b }
        return nil
    }
    func string(_ key: String) -> String? { self[key]?.stringValue }
    /// An int, or a list of ints (`attention_head_dim: 8` or `[5, 10, 20]`), as a list of `count`.
    func ints(_ key: String, count: Int) -> [Int]? {
        if let i = int(key) { return Array(repeating: i, count: count) }
        guard let a = self[key]?.arrayValue else { return nil }
        let values = a.compactMap { v -> Int? in if case let .int(i) = v { return i }; return nil }
        return values.count == a.count ? values : nil
    }
    func strings(_ key: String) -> [String]? {
        guard let a = self[key]?.arrayValue else { return nil }
        let values = a.compactMap(\.stringValue)
        return values.count == a.count ? values : nil
    }
}
