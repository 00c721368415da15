/// How the tensors of a model file are named: the one answer of layout detection. Every command that needs to
/// know (inspect, convert, the sgm view that merges and the sampler read) asks `StoredLayout.detect`.
public enum StoredLayout: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Stability's single file: `model.diffusion_model.…`, `first_stage_model.…`, `conditioner.embedders.N.…`
    /// (and SD1's `cond_stage_model.…`, MUMU's `connector.…`).
    case sgm
    /// A diffusers pipeline as one flat key space (`unet.…`, `vae.…`, `text_encoder.…`, `text_encoder_2.…`).
    case diffusers
    /// One diffusers UNet file (`down_blocks.…`, `conv_in.…` at the top).
    case diffusersUNet = "diffusers-unet"
    /// One diffusers VAE file (`encoder.down_blocks.…`, `decoder.up_blocks.…`).
    case diffusersVAE = "diffusers-vae"
    /// A VAE alone under its sgm names without the `first_stage_model.` prefix (`encoder.down.0.block.0.…`):
    /// what A1111's `models/VAE` folder and `sdxl_vae.safetensors` hold.
    case ldmVAE = "ldm-vae"
    /// A transformers CLIP text model alone (`text_model.…`).
    case transformersCLIP = "transformers-clip"
    case unknown

    public var description: String { rawValue }

    /// The layout of a model from its tensor names.
    public static func detect(_ names: [String]) -> StoredLayout {
        if names.contains(where: { n in SGMPrefix.allCases.contains { n.hasPrefix($0.rawValue) } || n.hasPrefix(SGMPrefix.connector) }) {
            return .sgm
        }
        if names.contains(where: { ModelComponent.splitDiffusers($0) != nil }) { return .diffusers }
        if names.contains(where: { $0.hasPrefix("decoder.up_blocks.") || $0.hasPrefix("encoder.down_blocks.") }) { return .diffusersVAE }
        if names.contains(where: { $0.hasPrefix("decoder.up.") || $0.hasPrefix("encoder.down.") }) { return .ldmVAE }
        if names.contains(where: { $0.hasPrefix("down_blocks.") || $0.hasPrefix("conv_in.") }) { return .diffusersUNet }
        if names.contains(where: { $0.hasPrefix("text_model.") || $0.hasPrefix("encoder.layers.") }) { return .transformersCLIP }
        return .unknown
    }

    /// The source with its tensors under flat names of `Layout` (sgm or diffusers) that the key maps convert, or
    /// nil when this layout has none: a component file gets its component's prefix.
    func flattened(_ source: TensorSource) -> (TensorSource, Layout)? {
        switch self {
        case .sgm: return (source, .sgm)
        case .diffusers: return (source, .diffusers)
        case .diffusersUNet: return (PrefixedSource(source, diffusers: .unet), .diffusers)
        case .diffusersVAE: return (PrefixedSource(source, diffusers: .vae), .diffusers)
        case .ldmVAE: return (PrefixedSource(source, sgm: .vae), .sgm)
        case .transformersCLIP, .unknown: return nil
        }
    }
}
