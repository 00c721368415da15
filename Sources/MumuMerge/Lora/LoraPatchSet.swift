import Foundation
import MumuFormats
import MumuTensor

/// The patches of one LoRA-family file, matched to a model's tensors (sgm layout names:
/// `model.diffusion_model.…`, `conditioner.embedders.0.transformer.text_model.…` (CLIP-L, HF names),
/// `conditioner.embedders.1.model.…` (bigG, open_clip names, fused `attn.in_proj_weight`), `first_stage_model.…`).
///
/// Reads only tensor descriptions and `.alpha` scalars when built; factors are read (zero-copy from the
/// file's mapping, converted to f32) when rows are asked for, and only the rows asked for are computed
/// (rows of up x down), so memory stays proportional to the rows of one call. Formats: kohya LoRA / LoCon
/// (with a Tucker `lora_mid`), LyCORIS LoHa (with `hada_t1` / `hada_t2`), LoKr (whole or decomposed
/// factors, `lokr_t2`), full diffs (`.diff`), PEFT / diffusers (`lora_A` / `lora_B`, alpha from
/// `lora_adapter_metadata`), DoRA (`dora_scale`, PEFT `lora_magnitude_vector`). See `LoraModule` for the formulas.
public final class LoraPatchSet: @unchecked Sendable {
    public let path: String
    /// Target keys this file changes.
    public var patchedKeys: Set<String> { Set(patches.keys) }
    /// Modules that match no tensor of the target (the caller warns), and other notes: module names
    /// (no spaces) first, sorted, then notes (sentences) on what is skipped or overlaps.
    public let unmatchedModules: [String]
    /// Keys whose patch must see all of its rows in one `apply` call: DoRA with a per-input-channel magnitude
    /// (older LyCORIS) normalises whole columns. Elsewhere any chunking of rows gives the same result.
    public let wholeTensorKeys: Set<String>

    private let source: TensorSource
    /// Per target key, its modules in name order.
    private let patches: [String: [LoraModule]]

    /// Tensors whose kind the bake does not carry out (LyCORIS norm and bias adapters).
    static let unsupportedSuffixes: Set<String> = [".diff_b", ".w_norm", ".b_norm", ".bias_indices", ".bias_values", ".bias_size"]

    /// Matches every module of `source` to a tensor of `target` (the model's tensor infos, sgm names).
    /// Throws (naming the file and module) on a module whose shapes don't fit its target tensor, on a module
    /// whose own factors don't fit each other, and on a file with no LoRA-family tensors.
    public init(source: TensorSource, target: [TensorInfo]) throws {
        self.source = source
        path = source.path
        guard LoraDetector.looksLikeLora(source.names) else { throw LoraError.notALora(path: source.path) }
        let (kohya, groups, unknown) = LoraDetector.modules(of: source.tensors)
        let index = LoraTargetIndex(target: target)
        let peft = PeftConfig(metadata: source.metadata["lora_adapter_metadata"])
        var patches: [String: [LoraModule]] = [:]
        var unmatched: [String] = []
        var notes: [String] = []
        for (name, parts) in groups.sorted(by: { $0.key < $1.key }) {
            let skipped = parts.keys.filter(Self.unsupportedSuffixes.contains).sorted()
            let used = parts.filter { !Self.unsupportedSuffixes.contains($0.key) }
            if !skipped.isEmpty {
                notes.append("\(name): \(skipped.joined(separator: ", ")) not supported (LyCORIS norm / bias adapters), skipped")
            }
            if used.keys.allSatisfy({ $0 == ".alpha" }) { continue }
            guard let target = index.target(of: name) else { unmatched.append(name); continue }
            var alpha: Float?
            if let a = parts[".alpha"] {
                let reader = LoraReader(source: source, path: path, module: name)
                guard a.elementCount == 1, a.dtype.isConvertibleFloat else {
                    throw LoraError.badModule(path: path, module: name, reason: "alpha '\(a.name)' is \(a.dtype.rawValue) \(LoraError.shape(a.shape)), not a float scalar")
                }
                alpha = try reader.floats(a).first
            }
            let module = try LoraModule(name: name, parts: used, alpha: alpha,
                                        peftScale: kohya ? nil : peft.scale(module: name),
                                        target: target, path: path)
            patches[target.key, default: []].append(module)
        }
        if !unknown.isEmpty {
            notes.append("\(unknown.count) tensors of no known LoRA kind, skipped, first: \(unknown.sorted()[0])")
        }
        for (key, modules) in patches.sorted(by: { $0.key < $1.key }) where modules.count > 1 {
            for i in 0..<modules.count {
                for j in (i + 1)..<modules.count {
                    let a = modules[i].target.rows ?? 0..<Int.max, b = modules[j].target.rows ?? 0..<Int.max
                    if a.overlaps(b) {
                        notes.append("modules \(modules[i].name) and \(modules[j].name) both patch \(key); both are applied")
                    }
                }
            }
        }
        self.patches = patches
        unmatchedModules = unmatched + notes
        wholeTensorKeys = Set(patches.filter { $0.value.contains(where: \.needsAllRows) }.keys)
    }

    /// Adds the patch for `key` at `strength` to rows `rows` of the weight. `values` holds exactly those rows
    /// (row-major, f32) of the current weight and is updated in place: W += strength * scale * dW for LoRA/LoCon/LoHa/LoKr;
    /// DoRA: W' = dora_scale * (W + s*dW) / ||W + s*dW|| (norm per output row), then W + strength*(W' - W).
    /// Thread-safe: called concurrently for different keys. No-op for keys not in patchedKeys.
    /// Rows are of the first dimension (a 0-d or 1-D tensor's rows are its elements). Keys in
    /// `wholeTensorKeys` throw unless all rows of the patched block come in one call.
    public func apply(key: String, rows: Range<Int>, values: UnsafeMutablePointer<Float>, strength: Float) throws {
        guard let modules = patches[key], let shape = modules.first?.target.shape else { return }
        let total = shape.first ?? 1
        let rowSize = shape.isEmpty ? 1 : shape.dropFirst().reduce(1, *)
        guard rows.lowerBound >= 0, rows.upperBound <= total else {
            throw LoraError.badRows(path: path, key: key, rows: rows, reason: "the tensor has \(total) rows")
        }
        guard !rows.isEmpty else { return }
        for m in modules {
            let block = m.target.rows ?? 0..<total
            let lo = max(rows.lowerBound, block.lowerBound), hi = min(rows.upperBound, block.upperBound)
            guard lo < hi else { continue }
            let local = (lo - block.lowerBound)..<(hi - block.lowerBound)
            let c = values + (lo - rows.lowerBound) * rowSize
            if let dora = m.dora {
                if dora.axis == .input, local != 0..<m.out {
                    throw LoraError.badRows(path: path, key: key, rows: rows,
                                            reason: "module '\(m.name)' is DoRA with a per-input-channel magnitude (older LyCORIS), which normalises whole columns: all rows \(block.lowerBound)..<\(block.upperBound) must come in one call (see wholeTensorKeys)")
                }
                try applyDora(m, dora, rows: local, to: c, strength: strength)
            } else if strength != 0 {
                try m.addDelta(rows: local, to: c, coefficient: strength * m.scale, source: source)
            }
        }
    }

    /// The patch of `key` as low-rank terms a layer can apply without merging (y = W x + Σ scale·up (down x),
    /// as diffusers/PEFT keep LoRAs): nil when a module of the key is not a plain low-rank product (LoHa,
    /// LoKr, full diffs, DoRA), which only `apply` can carry out. Tucker (`lora_mid`) cores are folded into down.
    /// `scale` includes alpha/rank but not the strength.
    public func lowRankTerms(key: String) throws -> [LowRankTerm]? {
        guard let modules = patches[key], let shape = modules.first?.target.shape else { return nil }
        var terms: [LowRankTerm] = []
        for m in modules {
            guard m.dora == nil, case let .lowRank(upInfo, downInfo, midInfo) = m.factors else { return nil }
            let r = LoraReader(source: source, path: source.path, module: m.name)
            let down = try LoraModule.lowRankDown(downInfo, mid: midInfo, reader: r)
            terms.append(LowRankTerm(rows: m.target.rows ?? 0..<(shape.first ?? 1), rank: upInfo.shape[1], inner: m.inner,
                                     up: try r.floats(upInfo), down: down, scale: m.scale))
        }
        return terms
    }

    /// W' = magnitude * (W + s dW) / ||W + s dW||, then W + strength (W' - W). The norm is per output row, or per
    /// input channel (over rows and kernel) for the older LyCORIS layout; a zero norm gives W' = 0.
    private func applyDora(_ m: LoraModule, _ dora: LoraModule.Dora, rows: Range<Int>, to c: UnsafeMutablePointer<Float>,
                           strength: Float) throws {
        let n = rows.count, inner = m.inner
        var wc = Array(UnsafeBufferPointer(start: c, count: n * inner))
        try wc.withUnsafeMutableBufferPointer {
            try m.addDelta(rows: rows, to: $0.baseAddress!, coefficient: m.scale, source: source)
        }
        let magnitude = try LoraReader(source: source, path: path, module: m.name).floats(dora.magnitude)
        let s = Double(strength)
        func blend(_ idx: Int, _ factor: Double) {
            let w = Double(c[idx])
            let merged = Double(wc[idx]) * factor
            c[idx] = Float(w + s * (merged - w))
        }
        switch dora.axis {
        case .output:
            for i in 0..<n {
                var sum = 0.0
                for j in 0..<inner { let v = Double(wc[i * inner + j]); sum += v * v }
                let norm = sum.squareRoot()
                let factor = norm > 0 ? Double(magnitude[rows.lowerBound + i]) / norm : 0
                for j in 0..<inner { blend(i * inner + j, factor) }
            }
        case .input:
            let channels = m.inChannels, kernel = inner / max(channels, 1)
            var sums = [Double](repeating: 0, count: channels)
            for i in 0..<n {
                for j in 0..<inner { let v = Double(wc[i * inner + j]); sums[j / kernel] += v * v }
            }
            let factors = (0..<channels).map { ch -> Double in
                let norm = sums[ch].squareRoot()
                return norm > 0 ? Double(magnitude[ch]) / norm : 0
            }
            for i in 0..<n {
                for j in 0..<inner { blend(i * inner + j, factors[j / kernel]) }
            }
        }
    }
}

/// The LoraConfig fields diffusers stores in `__metadata__["lora_adapter_metadata"]`: one flat JSON object
/// keyed `<component>.<field>` (`unet.lora_alpha`, `text_encoder_2.r`), or a bare LoraConfig (`lora_alpha`, `r`).
struct PeftConfig: Sendable {
    let json: JSONValue?

    init(metadata: String?) {
        json = metadata.flatMap { try? JSONParser.parse($0) }
    }

    /// The scale of PEFT module `module` (`unet.down_blocks.…`) as a function of its rank: lora_alpha / r
    /// (alpha_pattern / rank_pattern entries that equal the module path or end it, `use_rslora`: / sqrt(r));
    /// 1 without metadata or lora_alpha.
    func scale(module: String) -> (Int) -> Float {
        guard let json else { return { _ in 1 } }
        let component = String(module.prefix { $0 != "." })
        let local = module.dropFirst(component.count + 1)
        func value(_ field: String) -> JSONValue? { json[component + "." + field] ?? json[field] }
        func number(_ v: JSONValue?) -> Double? {
            switch v {
            case let .int(i)?: return Double(i)
            case let .double(x)?: return x
            case let .string(s)?: return Double(s)
            default: return nil
            }
        }
        func pattern(_ field: String) -> Double? {
            guard let members = value(field)?.objectValue else { return nil }
            let hit = members.first { key, _ in local == key || local.hasSuffix("." + key) }
            return number(hit?.1)
        }
        let alpha = pattern("alpha_pattern") ?? number(value("lora_alpha"))
        let configRank = pattern("rank_pattern") ?? number(value("r"))
        let rslora: Bool = { if case .bool(true)? = value("use_rslora") { return true }; return false }()
        return { rank in
            guard let alpha else { return 1 }
            let r = configRank ?? Double(rank)
            guard r > 0 else { return 1 }
            return Float(rslora ? alpha / r.squareRoot() : alpha / r)
        }
    }
}

/// One low-rank term of a patch: rows `rows` of the weight (flattened to [rows, inner]) gain
/// strength · scale · up [rows.count, rank] · down [rank, inner].
public struct LowRankTerm: Sendable {
    public var rows: Range<Int>
    public var rank: Int
    public var inner: Int
    public var up: [Float]
    public var down: [Float]
    public var scale: Float
}
