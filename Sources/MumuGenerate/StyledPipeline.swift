import Foundation
import MumuFormats
import MumuMerge
import MumuSampler
import MumuStyles
import MumuTensor

/// The loaded models of a pipeline seen as the style registry's `ResidentWeights`: every checkpoint tensor the
/// models read, by sgm name. `tensor` gives the base checkpoint's value (mapped, nothing copied); `replace` writes a
/// new value into the model in place (converted, reordered for convolutions, repacked for bf16), skipping values
/// equal to what the model already holds, so a full style that shares most tensors with the base costs only its
/// differences.
public final class ResidentDecoder: ResidentWeights {
    public let checkpoint: DecoderCheckpoint
    let table: ParameterTable
    public let infos: [TensorInfo]
    private let infoByName: [String: TensorInfo]
    /// Keys that hold something other than the base now.
    public private(set) var patched: Set<String> = []

    init(checkpoint: DecoderCheckpoint, table: ParameterTable) {
        self.checkpoint = checkpoint
        self.table = table
        let names = Set(table.names)
        infos = checkpoint.view.source.tensors.filter { names.contains($0.name) }
        infoByName = Dictionary(infos.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    public func tensor(_ key: String) throws -> TensorData {
        guard infoByName[key] != nil else { throw DecoderError.missingTensor(path: checkpoint.path, tensor: key) }
        return try checkpoint.view.source.tensor(key)
    }

    public func replace(_ key: String, with data: TensorData) throws {
        guard let info = infoByName[key], let slot = table[key] else { throw DecoderError.missingTensor(path: checkpoint.path, tensor: key) }
        guard data.info.elementCount == info.elementCount else {
            throw DecoderError.wrongShape(path: "style", tensor: key, expected: info.shape, found: data.info.shape)
        }
        let base = try checkpoint.view.source.tensor(key)
        let isBase = base.info.dtype == data.info.dtype && base.bytes.count == data.bytes.count
            && memcmp(base.bytes.baseAddress!, data.bytes.baseAddress!, base.bytes.count) == 0
        if isBase && !patched.contains(key) { return }
        var values = try data.floats()
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw DecoderError.input("style value for \(key) is not finite at element \(bad) (\(values[bad]))")
        }
        values.withUnsafeMutableBufferPointer { Self.write($0.baseAddress!, into: slot) }
        if isBase { patched.remove(key) } else { patched.insert(key) }
    }

    /// Writes checkpoint-layout values into a slot.
    static func write(_ v: UnsafeMutablePointer<Float>, into slot: ParameterSlot) {
        switch slot {
        case let .weight(layer, rows, kernel, transposed):
            let n = rows.count, cols = layer.cols
            if kernel > 1 {
                let reordered = DenseWeight.convWeight(v, cout: n, cin: cols / (kernel * kernel), kh: kernel, kw: kernel)
                reordered.withUnsafeBufferPointer { layer.setRows(rows, from: $0.baseAddress!) }
            } else if transposed {
                var t = [Float](repeating: 0, count: n * cols)
                for i in 0..<cols { for j in 0..<n { t[j * cols + i] = v[i * n + j] } }
                t.withUnsafeBufferPointer { layer.setRows(rows, from: $0.baseAddress!) }
            } else {
                layer.setRows(rows, from: v)
            }
        case let .bias(layer, rows):
            layer.setBias(rows, from: v)
        case let .normWeight(norm):
            norm.weight.data.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: v, count: $0.count) }
        case let .normBias(norm):
            norm.bias.data.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: v, count: $0.count) }
        case let .values(p):
            p.values.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: v, count: $0.count) }
        }
    }

    /// Whether `key` belongs to one of the text encoders.
    static func isText(_ key: String) -> Bool {
        key.hasPrefix(DecoderCheckpoint.prefixes[.te1]!) || key.hasPrefix(DecoderCheckpoint.prefixes[.te2]!)
    }
}

/// A style in effect on a pipeline: how it was applied, to undo it.
public final class AppliedStyle {
    public let name: String
    public let strength: Float
    /// How a style sits on the models.
    public enum Mode: String, Sendable {
        /// Factors kept unmerged in the layers.
        case lowRank = "low-rank"
        /// Tensors replaced in place (restored from the mapped base afterwards).
        case patched
    }
    public let mode: Mode
    /// Whether the style changes the text encoders (the prompt must be encoded again under it).
    public let touchesText: Bool
    /// Tensors (patched) or layers (low-rank) the style changed.
    public let changed: Int
    let patch: StylePatch?
    let layers: [DenseWeight]

    init(name: String, strength: Float, mode: Mode, touchesText: Bool, changed: Int, patch: StylePatch?, layers: [DenseWeight]) {
        self.name = name; self.strength = strength; self.mode = mode; self.touchesText = touchesText
        self.changed = changed; self.patch = patch; self.layers = layers
    }
}

/// One resident pipeline and the styles put on it in turn (the shared sampler of docs/styles.md). A LoRA-type style
/// is kept unmerged (each targeted layer adds strength · scale · up(down x), as diffusers/PEFT run LoRAs), so
/// switching costs nothing; every other kind (full, delta, recipe, LoHa/LoKr) is patched into the weights and
/// restored from the mapped base checkpoint afterwards.
public final class StyledPipeline {
    public let pipeline: SDXLPipeline
    public let resident: ResidentDecoder
    public private(set) var current: AppliedStyle?

    /// Loads the pipeline with its parameters recorded, so styles can be applied.
    /// Components borrowed from other files (`vae`, `textEncodersFrom`) are not recorded: styles patch the
    /// checkpoint's own tensors (LoRA styles attach to any loaded layer).
    public init(checkpoint: DecoderCheckpoint, precision: WeightPrecision = .f32, textEncoders: Bool = true,
                vae: DecoderCheckpoint? = nil, textEncodersFrom: DecoderCheckpoint? = nil) throws {
        let table = ParameterTable()
        checkpoint.parameters = table
        defer { checkpoint.parameters = nil }
        pipeline = try SDXLPipeline(checkpoint: checkpoint, precision: precision, textEncoders: textEncoders,
                                    vae: vae, textEncodersFrom: textEncodersFrom)
        resident = ResidentDecoder(checkpoint: checkpoint, table: table)
    }

    /// Puts `plugin` on the models (after taking off the current style). `strength` nil: the manifest's.
    @discardableResult
    public func apply(_ plugin: StylePlugin, strength: Float? = nil) throws -> AppliedStyle {
        try restore()
        let s = strength ?? Float(plugin.manifest.strength)
        let applied: AppliedStyle
        if let lowRank = plugin as? LowRankStyle, let terms = try lowRank.lowRankTerms(base: resident),
           let layers = try attach(terms, strength: s) {
            applied = AppliedStyle(name: plugin.manifest.name, strength: s, mode: .lowRank,
                                   touchesText: terms.keys.contains(where: ResidentDecoder.isText), changed: layers.count,
                                   patch: nil, layers: layers)
        } else {
            let before = resident.patched
            let patch = try plugin.apply(to: resident, strength: s)
            let changed = resident.patched.subtracting(before)
            applied = AppliedStyle(name: plugin.manifest.name, strength: s, mode: .patched,
                                   touchesText: changed.contains(where: ResidentDecoder.isText), changed: changed.count,
                                   patch: patch, layers: [])
        }
        current = applied
        return applied
    }

    /// Takes the current style off (the base again, bit for bit).
    public func restore() throws {
        guard let style = current else { return }
        for layer in style.layers { layer.lowRank = [] }
        try style.patch?.restore(resident)
        current = nil
    }

    /// Attaches unmerged terms to their layers; nil (nothing attached) when some key is not a plain product weight.
    private func attach(_ terms: [String: [LowRankTerm]], strength: Float) throws -> [DenseWeight]? {
        var plan: [(DenseWeight, LowRankAdapter)] = []
        for (key, list) in terms {
            guard case let .weight(layer, rows, kernel, transposed)? = resident.table[key], !transposed else { return nil }
            for term in list {
                guard term.inner == layer.cols, term.rows.upperBound <= rows.count, term.rank > 0 else {
                    throw DecoderError.input("style term for \(key): rows \(term.rows) x inner \(term.inner) does not fit the layer's \(rows.count) x \(layer.cols)")
                }
                let down = kernel > 1
                    ? term.down.withUnsafeBufferPointer { DenseWeight.convWeight($0.baseAddress!, cout: term.rank, cin: layer.cols / (kernel * kernel), kh: kernel, kw: kernel) }
                    : term.down
                let k = strength * term.scale
                plan.append((layer, LowRankAdapter(rowOffset: rows.lowerBound + term.rows.lowerBound, rows: term.rows.count,
                                                   rank: term.rank, cols: layer.cols, down: down, up: term.up.map { $0 * k })))
            }
        }
        var layers: [ObjectIdentifier: DenseWeight] = [:]
        for (layer, adapter) in plan {
            layer.lowRank.append(adapter)
            layers[ObjectIdentifier(layer)] = layer
        }
        return Array(layers.values)
    }
}
