import MumuTensor

/// What a LoRA-family file holds: kind (LoRA, LoCon, LoHa, LoKr, DoRA), layout (kohya or
/// PEFT/diffusers), rank, alpha, and the modules it targets per component.
public struct LoraDetection: Sendable {
    public struct Module: Sendable {
        /// The module name without its tensor suffixes (`lora_unet_input_blocks_4_1_..._to_q`).
        public var name: String
        public var component: String
        public var kind: String
        public var rank: Int?
        public var alpha: Float?
    }
    /// kohya | peft
    public var layout: String
    /// The file's kind: DoRA if any module carries a magnitude, else LoHa / LoKr / LoCon / LoRA.
    public var kind: String
    /// Every kind present (a LoCon file has LoRA modules on linears too).
    public var kinds: [String]
    /// The most common rank, and all ranks seen.
    public var rank: Int?
    public var ranks: [Int]
    /// Alpha values seen (kohya `.alpha` tensors or PEFT metadata), if any.
    public var alphas: [Float]
    public var modules: [Module]
    /// Targets per component (unet, te1, te2, te).
    public var targets: [String: Int]
    /// The base architecture the targets and shapes fit, when one does.
    public var architecture: String?
    public var notes: [String] = []
}

public enum LoraDetector {
    static let kohyaSuffixes = [".lora_down.weight", ".lora_up.weight", ".lora_mid.weight", ".alpha", ".dora_scale",
                                ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2",
                                ".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2",
                                ".diff", ".diff_b", ".w_norm", ".b_norm", ".bias_indices", ".bias_values", ".bias_size"]
    static let peftSuffixes = [".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector", ".lora_magnitude_vector.weight",
                               ".lora.down.weight", ".lora.up.weight", ".alpha"]

    /// Whether the names look like a LoRA-family file.
    public static func looksLikeLora(_ names: [String]) -> Bool {
        names.contains { n in
            n.hasPrefix("lora_unet_") || n.hasPrefix("lora_te") || n.contains(".lora_A.") || n.contains(".lora_down.")
                || n.contains(".hada_w1_a") || n.contains(".lokr_w1") || n.contains(".lora.down.")
        }
    }

    /// The tensors of a LoRA-family file by module: module name (the tensor name less its suffix) ->
    /// suffix (`.lora_down.weight`, `.hada_w1_a`, `.lora_A.weight`, ...) -> tensor. `kohya` tells which
    /// suffix set applied (kohya / LyCORIS names, else PEFT / diffusers); names with no known suffix are
    /// listed in `unknown`.
    public static func modules(of infos: [TensorInfo]) -> (kohya: Bool, modules: [String: [String: TensorInfo]], unknown: [String]) {
        let isKohya = infos.contains { $0.name.hasPrefix("lora_unet_") || $0.name.hasPrefix("lora_te") }
        let suffixes = isKohya ? kohyaSuffixes : peftSuffixes
        var groups: [String: [String: TensorInfo]] = [:]
        var unknown: [String] = []
        for t in infos {
            guard let s = suffixes.first(where: { t.name.hasSuffix($0) }) else { unknown.append(t.name); continue }
            groups[String(t.name.dropLast(s.count)), default: [:]][s] = t
        }
        return (isKohya, groups, unknown)
    }

    public static func detect(_ source: TensorSource) throws -> LoraDetection? {
        let infos = source.tensors
        guard looksLikeLora(infos.map(\.name)) else { return nil }
        let (isKohya, groups, groupedUnknown) = modules(of: infos)
        var unknown = groupedUnknown
        // PEFT: diffusers writes one flat object keyed "<component>.<LoraConfig field>" (`unet.lora_alpha`,
        // `text_encoder_2.r`, ...), each component with its own values; a bare LoraConfig uses the plain keys.
        let peftConfig = source.metadata["lora_adapter_metadata"].flatMap { try? JSONParser.parse($0) }
        func peftValue(_ field: String, module: String) -> Double? {
            guard let json = peftConfig else { return nil }
            return number(json[String(module.prefix { $0 != "." }) + "." + field]) ?? number(json[field])
        }
        var modules: [LoraDetection.Module] = []
        for (name, parts) in groups.sorted(by: { $0.key < $1.key }) {
            var kind = "LoRA"
            var rank: Int?
            if let down = parts[".lora_down.weight"] ?? parts[".lora_A.weight"] ?? parts[".lora.down.weight"] {
                rank = down.shape.first
                // LoCon is kohya / LyCORIS's name for LoRA on 3x3 convs; PEFT calls every adapter LoRA.
                if isKohya, down.shape.count == 4, down.shape[2] * down.shape[3] > 1 { kind = "LoCon" }
            } else if let w1b = parts[".hada_w1_b"] {
                kind = "LoHa"; rank = w1b.shape.first
            } else if parts[".lokr_w1"] != nil || parts[".lokr_w1_a"] != nil || parts[".lokr_w2"] != nil || parts[".lokr_w2_a"] != nil {
                kind = "LoKr"; rank = parts[".lokr_w1_b"]?.shape.first ?? parts[".lokr_w2_b"]?.shape.first
            } else if parts[".diff"] != nil {
                kind = "full"
            } else if parts.keys.allSatisfy({ $0 == ".alpha" }) {
                continue
            } else {
                unknown.append(contentsOf: parts.values.map(\.name)); continue
            }
            if parts[".dora_scale"] != nil || parts[".lora_magnitude_vector"] != nil || parts[".lora_magnitude_vector.weight"] != nil {
                kind = "DoRA"
            }
            var alpha: Float?
            if let a = parts[".alpha"], let v = try? source.tensor(a.name).floats().first { alpha = v }
            if alpha == nil, !isKohya { alpha = peftValue("lora_alpha", module: name).map(Float.init) }
            if !isKohya, rank == nil { rank = peftValue("r", module: name).map(Int.init) }
            modules.append(.init(name: name, component: component(of: name), kind: kind, rank: rank, alpha: alpha))
        }
        var rankCounts: [Int: Int] = [:]
        for m in modules { if let r = m.rank { rankCounts[r, default: 0] += 1 } }
        let kinds = Array(Set(modules.map(\.kind))).sorted()
        let kind = ["DoRA", "LoHa", "LoKr", "LoCon", "LoRA", "full"].first { kinds.contains($0) } ?? "LoRA"
        var targets: [String: Int] = [:]
        for m in modules { targets[m.component, default: 0] += 1 }
        var d = LoraDetection(layout: isKohya ? "kohya" : "peft", kind: kind, kinds: kinds,
                              rank: rankCounts.max { ($0.value, -$0.key) < ($1.value, -$1.key) }?.key,
                              ranks: rankCounts.keys.sorted(),
                              alphas: Array(Set(modules.compactMap(\.alpha))).sorted(),
                              modules: modules, targets: targets, architecture: nil)
        if !unknown.isEmpty {
            d.notes.append("\(unknown.count) tensors of no known LoRA kind, first: \(unknown.sorted()[0])")
        }
        d.architecture = isKohya ? kohyaArchitecture(groups) : nil
        if d.architecture == nil {
            if let v = source.metadata["ss_base_model_version"], v.contains("sdxl") { d.architecture = "sdxl-base" }
            else if targets["te2"] != nil { d.architecture = "sdxl-base" }
        }
        return d
    }

    static func number(_ v: JSONValue?) -> Double? {
        switch v {
        case let .int(i)?: return Double(i)
        case let .double(x)?: return x
        case let .string(s)?: return Double(s)
        default: return nil
        }
    }

    static func component(of name: String) -> String {
        if name.hasPrefix("lora_unet_") || name.hasPrefix("unet.") || name.hasPrefix("transformer.") { return "unet" }
        if name.hasPrefix("lora_te1_") || name.hasPrefix("text_encoder.") { return "te1" }
        if name.hasPrefix("lora_te2_") || name.hasPrefix("text_encoder_2.") { return "te2" }
        if name.hasPrefix("lora_te_") { return "te" }
        return "unknown"
    }

    /// The architecture whose UNet has every kohya UNet target with matching in/out sizes.
    static func kohyaArchitecture(_ groups: [String: [String: TensorInfo]]) -> String? {
        let unet = groups.filter { $0.key.hasPrefix("lora_unet_") }
        guard !unet.isEmpty else { return nil }
        for d in Architectures.all {
            guard let prefix = d.component("unet")?.prefix else { continue }
            var weights: [String: [Int]] = [:]
            for t in d.tensors where t.component == "unet" && t.name.hasSuffix(".weight") {
                let path = t.name.dropFirst(prefix.count).dropLast(".weight".count)
                weights["lora_unet_" + path.replacingDots()] = t.shape
            }
            let fits = unet.allSatisfy { name, parts in
                guard let shape = weights[name] else { return false }
                if let down = parts[".lora_down.weight"], let up = parts[".lora_up.weight"] {
                    return down.shape.count >= 2 && down.shape[1] == shape.dropFirst().first && up.shape.first == shape.first
                }
                // LoHa, LoKr and full diffs: the (out, in x kernel) their factors make must be the weight's.
                if let made = factoredSize(parts) {
                    return made.out == shape.first && made.inner == shape.dropFirst().reduce(1, *)
                }
                return true
            }
            if fits { return d.name }
        }
        return nil
    }
}

/// The (rows, elements per row) of the weight a LoHa, LoKr or full-diff module rebuilds, from its
/// factors' shapes (LyCORIS layouts; with Tucker cores the kernel comes from `hada_t1` / `lokr_t2`).
func factoredSize(_ parts: [String: TensorInfo]) -> (out: Int, inner: Int)? {
    func dims(_ suffix: String) -> [Int]? { parts[suffix]?.shape }
    if let diff = dims(".diff"), let first = diff.first { return (first, diff.dropFirst().reduce(1, *)) }
    if let a = dims(".hada_w1_a"), let b = dims(".hada_w1_b"), a.count == 2, b.count == 2 {
        if let t = dims(".hada_t1"), t.count >= 2 { return (a[1], b[1] * t.dropFirst(2).reduce(1, *)) }   // a [r, out], b [r, in]
        return (a[0], b[1])                                                                            // a [out, r], b [r, in x k]
    }
    var w1: (out: Int, inner: Int)?
    if let w = dims(".lokr_w1"), w.count == 2 { w1 = (w[0], w[1]) }
    else if let a = dims(".lokr_w1_a"), let b = dims(".lokr_w1_b"), a.count == 2, b.count == 2 { w1 = (a[0], b[1]) }
    var w2: (out: Int, inner: Int)?
    if let w = dims(".lokr_w2"), let first = w.first { w2 = (first, w.dropFirst().reduce(1, *)) }
    else if let a = dims(".lokr_w2_a"), let b = dims(".lokr_w2_b"), a.count == 2, b.count == 2 {
        if let t = dims(".lokr_t2"), t.count >= 2 { w2 = (a[1], b[1] * t.dropFirst(2).reduce(1, *)) }
        else { w2 = (a[0], b[1]) }
    }
    if let w1, let w2 { return (w1.out * w2.out, w1.inner * w2.inner) }
    return nil
}

extension Substring {
    func replacingDots() -> String { String(map { $0 == "." ? "_" : $0 }) }
}
