import MumuFormats

/// Where a LoRA module lands in a model: a tensor (sgm name) and, for the bigG q/k/v projections fused
/// into one `attn.in_proj_weight`, the rows of its block.
struct LoraTarget: Sendable, Equatable {
    /// The model's tensor (sgm name).
    var key: String
    /// The tensor's full shape.
    var shape: [Int]
    /// The rows of `key` the module's weight is (nil: all of them).
    var rows: Range<Int>?

    /// The shape of the weight the module patches: the tensor's, or its row block's.
    var moduleShape: [Int] {
        guard let rows, !shape.isEmpty else { return shape }
        return [rows.count] + shape.dropFirst()
    }
}

/// Every name under which LoRA trainers refer to the weights of a model given by its sgm tensor names,
/// built with the layouts' key maps (sgm -> diffusers / transformers names):
/// - kohya: `lora_unet_` + sgm module path (`input_blocks_4_1_…`) or diffusers path (`down_blocks_1_attentions_0_…`),
///   `lora_te1_` / `lora_te2_` (SD1: `lora_te_`) + transformers CLIP path (with or without `text_model.`), dots as
///   underscores;
/// - PEFT / diffusers: `unet.` + diffusers path, `text_encoder.` / `text_encoder_2.` + transformers path, with or
///   without `text_model.` (transformers >= 5.6 drops it), `vae.` + diffusers path.
/// bigG's q/k/v (`self_attn.q_proj` …) map to row blocks 0:H, H:2H, 2H:3H of the fused `attn.in_proj_weight`.
struct LoraTargetIndex: Sendable {
    private(set) var byName: [String: LoraTarget] = [:]

    init(target: [TensorInfo]) {
        let maps = KeyMaps.inferred(names: target.map(\.name), layout: .sgm)
        for info in target {
            guard let (prefix, local) = SGMPrefix.split(info.name) else { continue }
            let component = prefix.component
            let whole = LoraTarget(key: info.name, shape: info.shape, rows: nil)
            if component == .unet, local.hasSuffix(".weight") {
                add("lora_unet_" + Self.underscored(local.dropLast(".weight".count)), whole)
            }
            guard let mapping = maps.map(for: component).toDiffusers(local) else { continue }
            var parts: [(name: String, target: LoraTarget)] = []
            switch mapping.transform {
            case .identity, .linearFromConv1x1, .conv1x1FromLinear:
                // Same elements in the same order: a reshape does not change the rows a module patches.
                parts = mapping.targets.map { ($0, whole) }
            case .splitRows:
                guard let first = info.shape.first, !mapping.targets.isEmpty, first % mapping.targets.count == 0 else { continue }
                let n = first / mapping.targets.count
                parts = mapping.targets.enumerated().map { i, name in
                    (name, LoraTarget(key: info.name, shape: info.shape, rows: i * n ..< (i + 1) * n))
                }
            case .concatRows, .transpose:
                continue    // bigG's bare text_projection: no trainer patches it
            }
            for (name, target) in parts where name.hasSuffix(".weight") {
                let module = String(name.dropLast(".weight".count))
                switch component {
                case .unet: add("lora_unet_" + Self.underscored(module[...]), target)
                case .te1:
                    add("lora_te1_" + Self.underscored(module[...]), target)
                    // SD1's only text encoder: kohya names it `lora_te_`.
                    if prefix == .te1SD1 { add("lora_te_" + Self.underscored(module[...]), target) }
                case .te2: add("lora_te2_" + Self.underscored(module[...]), target)
                case .vae: break
                }
                add(component.diffusersPrefix + module, target)
                if component == .te1 || component == .te2, module.hasPrefix("text_model.") {
                    // Trainers on transformers >= 5 see CLIPTextModel's modules without `text_model.`.
                    let bare = module.dropFirst("text_model.".count)
                    add(component.diffusersPrefix + bare, target)
                    add((component == .te1 ? "lora_te1_" : "lora_te2_") + Self.underscored(bare), target)
                }
            }
        }
    }

    /// Where module `name` lands, if anywhere.
    func target(of name: String) -> LoraTarget? { byName[name] }

    private mutating func add(_ name: String, _ target: LoraTarget) {
        if byName[name] == nil { byName[name] = target }
    }

    static func underscored(_ s: Substring) -> String { String(s.map { $0 == "." ? "_" : $0 }) }
}
