/// A naming scheme for the tensors of one SDXL-family model.
///
/// - `sgm`: the original Stability single file: `model.diffusion_model.…`, `first_stage_model.…`,
///   `conditioner.embedders.N.…`.
/// - `diffusers`: a diffusers pipeline seen as one flat key space: `unet.…`, `vae.…`, `text_encoder.…`,
///   `text_encoder_2.…` (the prefixes diffusers/PEFT LoRA files use; `DiffusersFolder` exposes a folder this way).
public enum Layout: String, Sendable, CaseIterable, CustomStringConvertible {
    case sgm
    case diffusers

    public var description: String { rawValue }

    /// Splits a flat name into its component and the name inside the component.
    func split(_ name: String) -> (component: ModelComponent, local: String, prefix: String)? {
        switch self {
        case .sgm:
            return SGMPrefix.split(name).map { ($0.prefix.component, $0.local, $0.prefix.rawValue) }
        case .diffusers:
            return ModelComponent.splitDiffusers(name).map { ($0.component, $0.local, $0.component.diffusersPrefix) }
        }
    }
}

/// The parts of an SDXL-family model that hold weights.
public enum ModelComponent: String, Sendable, CaseIterable, CustomStringConvertible {
    case unet
    case vae
    /// CLIP-L (transformers `CLIPTextModel`).
    case te1
    /// OpenCLIP bigG (transformers `CLIPTextModelWithProjection` in diffusers).
    case te2

    public var description: String { rawValue }

    /// The sub-folder of a diffusers pipeline, which is also the flat-name prefix without its dot.
    public var diffusersFolder: String {
        switch self {
        case .unet: return "unet"
        case .vae: return "vae"
        case .te1: return "text_encoder"
        case .te2: return "text_encoder_2"
        }
    }

    /// Prefix of this component's tensors in the flat diffusers key space (`unet.`, `text_encoder_2.`, ...).
    public var diffusersPrefix: String { diffusersFolder + "." }

    /// Splits `text_encoder_2.text_model.…` into (te2, `text_model.…`).
    public static func splitDiffusers(_ name: String) -> (component: ModelComponent, local: String)? {
        guard let dot = name.firstIndex(of: ".") else { return nil }
        let head = name[..<dot]
        guard let component = allCases.first(where: { $0.diffusersFolder == head }) else { return nil }
        let local = String(name[name.index(after: dot)...])
        return local.isEmpty ? nil : (component, local)
    }
}

/// The component prefixes of sgm single files. SDXL base carries CLIP-L as embedder 0 and bigG as
/// embedder 1; the refiner carries only bigG, as embedder 0; SD1 files carry CLIP-L as `cond_stage_model`.
public enum SGMPrefix: String, Sendable, CaseIterable {
    case unet = "model.diffusion_model."
    case vae = "first_stage_model."
    case te1 = "conditioner.embedders.0.transformer."
    case te2 = "conditioner.embedders.1.model."
    case te2Refiner = "conditioner.embedders.0.model."
    case te1SD1 = "cond_stage_model.transformer."

    /// MUMU's connector (docs/formats.md), in mumu-decoder files; not an SDXL component.
    public static let connector = "connector."

    public var component: ModelComponent {
        switch self {
        case .unet: return .unet
        case .vae: return .vae
        case .te1, .te1SD1: return .te1
        case .te2, .te2Refiner: return .te2
        }
    }

    /// Splits a flat sgm name into its prefix and the name inside the component.
    public static func split(_ name: String) -> (prefix: SGMPrefix, local: String)? {
        for prefix in allCases where name.hasPrefix(prefix.rawValue) {
            let local = String(name.dropFirst(prefix.rawValue.count))
            if !local.isEmpty { return (prefix, local) }
        }
        return nil
    }
}
