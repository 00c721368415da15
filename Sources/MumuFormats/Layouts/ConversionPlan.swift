/// A tensor a conversion leaves out, and why. Conversions never drop a tensor silently: every source
/// name is either in a mapping or here.
public struct UnmappedTensor: Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var reason: String
    public init(name: String, reason: String) { self.name = name; self.reason = reason }
    public var description: String { "\(name): \(reason)" }
}

/// The name maps of the four components of one model, each sized to that model.
public struct KeyMaps: Sendable {
    public var unet: UNetKeyMap
    public var vae: VAEKeyMap
    public var te1 = CLIPTextKeyMap()
    public var te2 = OpenCLIPKeyMap()

    public init(unet: UNetStructure = .sdxl, vae: VAEStructure = .sdxl) {
        self.unet = UNetKeyMap(structure: unet)
        self.vae = VAEKeyMap(structure: vae)
    }

    /// Maps sized from the names of a model in `layout` (flat names, with component prefixes); SDXL
    /// sizes for a component whose names do not tell.
    public static func inferred(names: [String], layout: Layout) -> KeyMaps {
        let byComponent = ConversionPlan.group(names, layout: layout)
        let unetNames = byComponent[.unet]?.map(\.local) ?? []
        let vaeNames = byComponent[.vae]?.map(\.local) ?? []
        switch layout {
        case .sgm:
            return KeyMaps(unet: UNetStructure.infer(sgmNames: unetNames) ?? .sdxl,
                           vae: VAEStructure.infer(sgmNames: vaeNames) ?? .sdxl)
        case .diffusers:
            return KeyMaps(unet: UNetStructure.infer(diffusersNames: unetNames) ?? .sdxl,
                           vae: VAEStructure.infer(diffusersNames: vaeNames) ?? .sdxl)
        }
    }

    public func map(for component: ModelComponent) -> any ComponentKeyMap {
        switch component {
        case .unet: return unet
        case .vae: return vae
        case .te1: return te1
        case .te2: return te2
        }
    }
}

/// A whole conversion between layouts as a list of mappings over flat names, built from the source's
/// names alone, so a converter can go tensor by tensor. Names it cannot map are listed in `unmapped`.
public struct ConversionPlan: Sendable {
    public let from: Layout
    public let to: Layout
    /// In the order of the sources' first names.
    public let mappings: [Mapping]
    /// Source names left out, in source order, each with its reason.
    public let unmapped: [UnmappedTensor]

    /// Plans the conversion of a model whose tensors are `names` (flat, in layout `from`) to layout `to`.
    /// `keyMaps` defaults to maps sized from `names`.
    public init(names: [String], from: Layout, to: Layout, keyMaps: KeyMaps? = nil) {
        self.from = from
        self.to = to
        if from == to {
            mappings = names.map { .rename($0, $0) }
            unmapped = []
            return
        }
        let maps = keyMaps ?? KeyMaps.inferred(names: names, layout: from)
        let grouped = Self.group(names, layout: from)
        let targetPrefixes = Self.targetPrefixes(grouped, from: from, keyMaps: maps)

        // Where each (component, canonical local name) came from, to resolve the sources of fused groups.
        var original: [ModelComponent: [String: String]] = [:]
        for (component, entries) in grouped {
            let map = maps.map(for: component)
            var o: [String: String] = [:]
            for e in entries { o[from == .diffusers ? map.canonicalDiffusers(e.local) : e.local] = e.local }
            original[component] = o
        }

        var mappings: [Mapping] = []
        var unmapped: [UnmappedTensor] = []
        var producedBy: [String: String] = [:]   // target -> first source
        var planned = Set<String>()               // source names already in a mapping
        for name in names {
            if planned.contains(name) { continue }
            guard let (component, local, prefix) = from.split(name) else {
                unmapped.append(.init(name: name, reason: "not under a known \(from) component prefix (\(Self.prefixList(from)))"))
                continue
            }
            let map = maps.map(for: component)
            guard let mapping = map.mapping(local, from: from) else {
                unmapped.append(.init(name: name, reason: "no \(to) counterpart for this \(component) tensor"))
                continue
            }
            // A fused group names its other members canonically; find them as the source spells them.
            let originals = original[component] ?? [:]
            let sourceLocals = mapping.sources.map { $0 == local ? local : originals[from == .diffusers ? map.canonicalDiffusers($0) : $0] }
            let missing = zip(mapping.sources, sourceLocals).filter { $0.1 == nil }.map { prefix + $0.0 }
            if !missing.isEmpty {
                unmapped.append(.init(name: name, reason: "\(mapping.transform) needs \(missing.joined(separator: ", ")), which the source lacks"))
                continue
            }
            var m = mapping.prefixed(sources: prefix, targets: targetPrefixes[component] ?? "")
            m.sources = sourceLocals.map { prefix + $0! }
            if let clash = m.targets.first(where: { producedBy[$0] != nil }) {
                unmapped.append(.init(name: name, reason: "would make '\(clash)' again, already made from '\(producedBy[clash]!)'"))
                continue
            }
            for t in m.targets { producedBy[t] = m.sources[0] }
            planned.formUnion(m.sources)
            mappings.append(m)
        }
        self.mappings = mappings
        self.unmapped = unmapped
    }

    /// Every target name, in plan order.
    public var targetNames: [String] { mappings.flatMap(\.targets) }

    /// A readable account of what was left out (empty when nothing was).
    public var unmappedReport: String {
        guard !unmapped.isEmpty else { return "" }
        return "\(unmapped.count) tensor(s) not converted \(from) -> \(to):\n"
            + unmapped.map { "  \($0)" }.joined(separator: "\n")
    }

    /// Flat names grouped by component, each with its local name, in source order.
    static func group(_ names: [String], layout: Layout) -> [ModelComponent: [(name: String, local: String)]] {
        var out: [ModelComponent: [(name: String, local: String)]] = [:]
        for name in names {
            if let (component, local, _) = layout.split(name) { out[component, default: []].append((name, local)) }
        }
        return out
    }

    /// The prefix each component's targets get. Writing sgm, the text encoders' slots depend on the
    /// model: SDXL base has CLIP-L as embedder 0 and bigG as 1; the refiner (bigG alone) has bigG as
    /// embedder 0; SD1 (CLIP-L alone, attention at the first UNet level) has `cond_stage_model`.
    static func targetPrefixes(_ grouped: [ModelComponent: [(name: String, local: String)]], from: Layout,
                               keyMaps: KeyMaps) -> [ModelComponent: String] {
        var out: [ModelComponent: String] = [:]
        switch from {
        case .sgm:
            for c in ModelComponent.allCases { out[c] = c.diffusersPrefix }
        case .diffusers:
            let hasTE1 = grouped[.te1] != nil, hasTE2 = grouped[.te2] != nil
            let sd1 = hasTE1 && !hasTE2 && grouped[.unet] != nil && keyMaps.unet.structure.downAttention.first == true
            out[.unet] = SGMPrefix.unet.rawValue
            out[.vae] = SGMPrefix.vae.rawValue
            out[.te1] = (sd1 ? SGMPrefix.te1SD1 : SGMPrefix.te1).rawValue
            out[.te2] = (hasTE2 && !hasTE1 ? SGMPrefix.te2Refiner : SGMPrefix.te2).rawValue
        }
        return out
    }

    private static func prefixList(_ layout: Layout) -> String {
        switch layout {
        case .sgm: return SGMPrefix.allCases.map(\.rawValue).joined(separator: ", ")
        case .diffusers: return ModelComponent.allCases.map(\.diffusersPrefix).joined(separator: ", ")
        }
    }
}
