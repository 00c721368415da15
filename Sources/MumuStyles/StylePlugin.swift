import Foundation
import MumuFormats
import MumuMerge
import MumuTensor

/// The weights a sampler keeps resident: the shared base decoder, patched per style.
public protocol ResidentWeights: AnyObject {
    var infos: [TensorInfo] { get }
    func tensor(_ key: String) throws -> TensorData
    func replace(_ key: String, with data: TensorData) throws
}

/// A style resolved for a resident base: the keys it changes and their new values. `apply` swaps them in
/// and returns a patch that restores the base.
public protocol StylePlugin: AnyObject {
    var manifest: StyleManifest { get }
    /// Keys whose values the style changes (a subset of the base's keys).
    func changedKeys(base: ResidentWeights) throws -> [String]
    /// The style's value for `key`, in the base tensor's dtype and shape, at `strength`.
    func tensor(_ key: String, base: TensorData, strength: Float) throws -> TensorData
}

/// What `apply` changed, to put the base back.
public final class StylePatch {
    public let style: String
    public private(set) var originals: [String: TensorData]
    init(style: String, originals: [String: TensorData]) { self.style = style; self.originals = originals }

    /// Restores every replaced tensor.
    public func restore(_ weights: ResidentWeights) throws {
        for (key, data) in originals { try weights.replace(key, with: data) }
        originals = [:]
    }
}

extension StylePlugin {
    /// Swaps the style's tensors into the resident weights.
    public func apply(to weights: ResidentWeights, strength: Float? = nil) throws -> StylePatch {
        let s = strength ?? Float(manifest.strength)
        var originals: [String: TensorData] = [:]
        do {
            for key in try changedKeys(base: weights) {
                let current = try weights.tensor(key)
                let patched = try tensor(key, base: current, strength: s)
                guard patched.info.shape == current.info.shape, patched.info.dtype == current.info.dtype else {
                    throw StyleError.invalid("style '\(manifest.name)': tensor '\(key)' is \(patched.info.shape) \(patched.info.dtype.rawValue), the base's \(current.info.shape) \(current.info.dtype.rawValue)")
                }
                originals[key] = current
                try weights.replace(key, with: patched)
            }
        } catch {
            try? StylePatch(style: manifest.name, originals: originals).restore(weights)
            throw error
        }
        return StylePatch(style: manifest.name, originals: originals)
    }
}

/// base + strength (style - base), in f32, stored in the base's dtype.
func blend(_ base: TensorData, toward style: TensorData, strength: Float) throws -> TensorData {
    var v = try base.floats()
    let s = try style.floats()
    for i in v.indices { v[i] += strength * (s[i] - v[i]) }
    return TensorData.owned(base.info, bytes: try Convert.fromF32Array(v, base.info.dtype))
}

/// A whole checkpoint: every tensor the base also has is replaced (converted to the base's dtype).
/// Strength blends: base + strength * (style - base).
final class FullStylePlugin: StylePlugin {
    let manifest: StyleManifest
    let source: TensorSource
    init(manifest: StyleManifest, source: TensorSource) { self.manifest = manifest; self.source = source }

    func changedKeys(base: ResidentWeights) throws -> [String] {
        let mine = source.infoByName
        return base.infos.filter { mine[$0.name]?.shape == $0.shape }.map(\.name)
    }

    func tensor(_ key: String, base: TensorData, strength: Float) throws -> TensorData {
        let t = try source.tensor(key)
        if strength == 1 { return try t.converted(to: base.info.dtype).renamed(key) }
        return try blend(base, toward: t, strength: strength)
    }
}

/// A lossless delta: the variant rebuilt bit for bit from the resident base's bits.
final class DeltaStylePlugin: StylePlugin {
    let manifest: StyleManifest
    let reader: XorDelta.Reader
    init(manifest: StyleManifest, reader: XorDelta.Reader) { self.manifest = manifest; self.reader = reader }

    func changedKeys(base: ResidentWeights) throws -> [String] {
        let names = Set(base.infos.map(\.name))
        return reader.order.filter { names.contains($0) }
    }

    func tensor(_ key: String, base: TensorData, strength: Float) throws -> TensorData {
        let variant = try reader.tensor(key, base: SingleTensorSource(base))
        if strength == 1 { return variant }
        return try blend(base, toward: variant, strength: strength)
    }
}

/// A LoRA (or a low-rank delta, stored in LoRA format): W + strength * scale * dW on the keys it targets.
final class LoraStylePlugin: StylePlugin {
    let manifest: StyleManifest
    let source: TensorSource
    private var patches: LoraPatchSet?
    init(manifest: StyleManifest, source: TensorSource) { self.manifest = manifest; self.source = source }

    func patchSet(_ base: ResidentWeights) throws -> LoraPatchSet {
        if let patches { return patches }
        let p = try LoraPatchSet(source: source, target: base.infos)
        patches = p
        return p
    }

    func changedKeys(base: ResidentWeights) throws -> [String] { try patchSet(base).patchedKeys.sorted() }

    /// The style as unmerged low-rank terms per key (nil when some module is not a plain LoRA product).
    func lowRankTerms(base: ResidentWeights) throws -> [String: [LowRankTerm]]? {
        let set = try patchSet(base)
        var out: [String: [LowRankTerm]] = [:]
        for key in set.patchedKeys.sorted() {
            guard let terms = try set.lowRankTerms(key: key) else { return nil }
            out[key] = terms
        }
        return out
    }

    func tensor(_ key: String, base: TensorData, strength: Float) throws -> TensorData {
        guard let patches else { throw StyleError.invalid("style '\(manifest.name)': changedKeys must come first") }
        var v = try base.floats()
        let rows = max(base.info.shape.first ?? 1, 1)
        try v.withUnsafeMutableBufferPointer { try patches.apply(key: key, rows: 0..<rows, values: $0.baseAddress!, strength: strength) }
        return TensorData.owned(base.info, bytes: try Convert.fromF32Array(v, base.info.dtype))
    }
}

/// Styles a sampler can keep unmerged, as diffusers/PEFT keep LoRAs: each patched layer computes
/// y = W x + strength · Σ scale · up (down x), and switching styles swaps small factors, not weights.
public protocol LowRankStyle: StylePlugin {
    func lowRankTerms(base: ResidentWeights) throws -> [String: [LowRankTerm]]?
}
extension LoraStylePlugin: LowRankStyle {}

/// One tensor seen as a source (the resident base tensor a delta is rebuilt against).
final class SingleTensorSource: TensorSource, @unchecked Sendable {
    let data: TensorData
    init(_ data: TensorData) { self.data = data }
    var path: String { "resident base" }
    var tensors: [TensorInfo] { [data.info] }
    var metadata: [String: String] { [:] }
    func tensor(_ name: String) throws -> TensorData { data.renamed(name) }
}

/// Resident weights held in memory, read from a model (the simplest sampler's store; tests and benchmarks).
public final class InMemoryWeights: ResidentWeights {
    private var store: [String: TensorData]
    public let infos: [TensorInfo]
    /// Copies every tensor of `source` into memory (owned, so the file can go away).
    public init(loading source: TensorSource) throws {
        var store: [String: TensorData] = [:]
        for info in source.tensors {
            let t = try source.tensor(info.name)
            store[info.name] = TensorData.owned(t.info, bytes: Array(t.bytes))
        }
        self.store = store
        infos = source.tensors
    }
    public func tensor(_ key: String) throws -> TensorData {
        guard let t = store[key] else { throw FormatError.missingTensor(path: "resident weights", tensor: key) }
        return t
    }
    public func replace(_ key: String, with data: TensorData) throws {
        guard store[key] != nil else { throw FormatError.missingTensor(path: "resident weights", tensor: key) }
        store[key] = data.renamed(key)
    }
}
