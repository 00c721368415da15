/// Which naming scheme a model's keys follow, and an sgm-named view for detection.
public enum Layouts {
    /// sgm | diffusers | diffusers-unet | diffusers-vae | transformers-clip | unknown
    public static func detectLayout(_ names: [String]) -> String {
        let sgmPrefixes = ["model.diffusion_model.", "first_stage_model.", "conditioner.embedders.", "cond_stage_model.", "connector."]
        if names.contains(where: { n in sgmPrefixes.contains { n.hasPrefix($0) } }) { return "sgm" }
        if names.contains(where: { $0.hasPrefix("unet.") || $0.hasPrefix("vae.") || $0.hasPrefix("text_encoder.") || $0.hasPrefix("text_encoder_2.") }) {
            return "diffusers"
        }
        // A diffusers VAE file (vae/diffusion_pytorch_model.safetensors) has only encoder.* / decoder.* /
        // (post_)quant_conv.* keys; a UNet file has down_blocks.* and conv_in.* at the top.
        if names.contains(where: { $0.hasPrefix("decoder.up_blocks.") || $0.hasPrefix("encoder.down_blocks.") }) { return "diffusers-vae" }
        if names.contains(where: { $0.hasPrefix("down_blocks.") || $0.hasPrefix("conv_in.") }) { return "diffusers-unet" }
        if names.contains(where: { $0.hasPrefix("text_model.") || $0.hasPrefix("encoder.layers.") }) { return "transformers-clip" }
        return "unknown"
    }
}

extension Layouts {
    /// The source's tensors under sgm single-file names (what the descriptors use).
    /// Diffusers names are converted with the layout key maps; names that do not convert are kept
    /// as they are (so detection reports them as extra instead of losing them).
    public static func sgmView(_ source: TensorSource, layout: String) -> [TensorInfo] {
        let viewed: TensorSource
        switch layout {
        case "diffusers": viewed = source
        case "diffusers-unet": viewed = PrefixedSource(source, diffusers: .unet)
        case "diffusers-vae": viewed = PrefixedSource(source, diffusers: .vae)
        default: return source.tensors
        }
        guard let converted = try? LayoutConverter().convert(source: viewed, from: .diffusers, to: .sgm) else {
            return source.tensors
        }
        let unmapped = Set(converted.unmapped.map(\.name))
        return converted.tensors + viewed.tensors.filter { unmapped.contains($0.name) }
    }
}
