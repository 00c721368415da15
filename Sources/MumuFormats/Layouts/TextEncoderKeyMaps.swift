/// The top-level modules of transformers' `CLIPTextTransformer`: transformers >= 5 saves `CLIPTextModel`
/// with names starting here (`encoder.layers.0.…`) instead of under `text_model.`.
private let clipTextModules: Set<Substring> = ["embeddings", "encoder", "final_layer_norm"]

/// `encoder.layers.0.…` -> `text_model.encoder.layers.0.…`; other names unchanged.
private func withTextModelPrefix(_ name: String) -> String {
    guard let dot = name.firstIndex(of: "."), clipTextModules.contains(name[..<dot]) else { return name }
    return "text_model." + name
}

/// CLIP-L (te1): sgm files hold it in transformers' own names (`text_model.…`), so the map is the
/// identity on `text_model.` names. On the diffusers side it also reads the transformers >= 5 spelling
/// without `text_model.`, and always writes `text_model.` (what diffusers folders of SDXL ship).
public struct CLIPTextKeyMap: ComponentKeyMap {
    public init() {}

    public func toDiffusers(_ name: String) -> Mapping? {
        name.hasPrefix("text_model.") ? .rename(name, name) : nil
    }

    public func toSGM(_ name: String) -> Mapping? {
        let canonical = canonicalDiffusers(name)
        return canonical.hasPrefix("text_model.") ? .rename(name, canonical) : nil
    }

    public func canonicalDiffusers(_ name: String) -> String { withTextModelPrefix(name) }
}

/// OpenCLIP bigG (te2) <-> transformers `CLIPTextModelWithProjection` (diffusers
/// `convert_open_clip_checkpoint`): `transformer.resblocks.N` = `text_model.encoder.layers.N`; the fused
/// attention input projection `attn.in_proj_weight [3W, W]` (and `in_proj_bias [3W]`) holds q, k, v
/// stacked by rows; the bare `text_projection [W, P]` is the transpose of `text_projection.weight [P, W]`.
/// OpenCLIP's `logit_scale` has no counterpart in transformers' text model.
public struct OpenCLIPKeyMap: ComponentKeyMap {
    private let table: RenameTable

    private static let sgmLayer = "transformer.resblocks."
    private static let diffusersLayer = "text_model.encoder.layers."
    /// Renames inside one layer, sgm -> diffusers.
    private static let layerRenames: [(String, String)] = [
        ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ]
    /// Fused tensors inside one layer: sgm name and the diffusers names of its row blocks.
    private static let fused: [(String, [String])] = [
        ("attn.in_proj_weight", ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"]),
        ("attn.in_proj_bias", ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]),
    ]

    public init() {
        var t = RenameTable()
        t.exact("token_embedding.weight", "text_model.embeddings.token_embedding.weight")
        t.exact("positional_embedding", "text_model.embeddings.position_embedding.weight")
        t.prefix("ln_final", "text_model.final_layer_norm")
        t.exact("text_projection", "text_projection.weight", .transpose)
        table = t
    }

    public func toDiffusers(_ name: String) -> Mapping? {
        if let m = table.toDiffusers(name) { return m }
        guard let (n, rest) = NameParts.indexAndRest(after: Self.sgmLayer, in: name) else { return nil }
        let target = "\(Self.diffusersLayer)\(n)."
        for (s, d) in Self.layerRenames where rest.hasPrefix(s) {
            return .rename(name, target + d + rest.dropFirst(s.count))
        }
        for (s, parts) in Self.fused where rest == s {
            return Mapping(sources: [name], targets: parts.map { target + $0 }, transform: .splitRows)
        }
        return nil
    }

    public func toSGM(_ name: String) -> Mapping? {
        let canonical = canonicalDiffusers(name)
        if let m = table.toSGM(canonical) { return .rename(name, m.targets[0], m.transform) }
        guard let (n, rest) = NameParts.indexAndRest(after: Self.diffusersLayer, in: canonical) else { return nil }
        let target = "\(Self.sgmLayer)\(n)."
        for (s, d) in Self.layerRenames where rest.hasPrefix(d) {
            return .rename(name, target + s + rest.dropFirst(d.count))
        }
        for (s, parts) in Self.fused where parts.contains(rest) {
            let sources = parts.map { "\(Self.diffusersLayer)\(n).\($0)" }
            return Mapping(sources: sources, targets: [target + s], transform: .concatRows)
        }
        return nil
    }

    public func canonicalDiffusers(_ name: String) -> String { withTextModelPrefix(name) }
}
