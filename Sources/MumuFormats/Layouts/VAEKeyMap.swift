/// The shape of a VAE's block tree: resolution levels and resnets per encoder level (the decoder has
/// one more per level). SDXL's VAE (and SD1's) has 4 levels of 2.
public struct VAEStructure: Hashable, Sendable {
    public var levels: Int
    public var layersPerBlock: Int

    public init(levels: Int, layersPerBlock: Int) {
        self.levels = levels; self.layersPerBlock = layersPerBlock
    }

    public static let sdxl = VAEStructure(levels: 4, layersPerBlock: 2)

    /// From sgm VAE names (`encoder.down.3.block.1.…`, `decoder.up.0.block.2.…`); nil without either.
    public static func infer(sgmNames names: [String]) -> VAEStructure? {
        infer(names, encoder: "encoder.down.", decoder: "decoder.up.", resnets: "block.")
    }

    /// From diffusers VAE names (`encoder.down_blocks.3.resnets.1.…`); nil without either.
    public static func infer(diffusersNames names: [String]) -> VAEStructure? {
        infer(names, encoder: "encoder.down_blocks.", decoder: "decoder.up_blocks.", resnets: "resnets.")
    }

    private static func infer(_ names: [String], encoder: String, decoder: String, resnets: String) -> VAEStructure? {
        var maxLevel = -1, maxEncoderResnet = -1, maxDecoderResnet = -1
        for name in names {
            if let (i, rest) = NameParts.indexAndRest(after: encoder, in: name) {
                maxLevel = max(maxLevel, i)
                if let j = NameParts.index(after: resnets, in: rest) { maxEncoderResnet = max(maxEncoderResnet, j) }
            } else if let (i, rest) = NameParts.indexAndRest(after: decoder, in: name) {
                maxLevel = max(maxLevel, i)
                if let j = NameParts.index(after: resnets, in: rest) { maxDecoderResnet = max(maxDecoderResnet, j) }
            }
        }
        guard maxLevel >= 0 else { return nil }
        let layers = maxEncoderResnet >= 0 ? maxEncoderResnet + 1 : max(maxDecoderResnet, 1)
        return VAEStructure(levels: maxLevel + 1, layersPerBlock: layers)
    }
}

/// VAE names, sgm <-> diffusers (diffusers `convert_ldm_vae_checkpoint`). The decoder's levels run in
/// opposite orders (`decoder.up.(n-1-i)` = `decoder.up_blocks.i`); the mid-block attention's q, k, v and
/// proj_out are 1x1 convolutions in sgm and Linear layers in diffusers.
public struct VAEKeyMap: ComponentKeyMap {
    public let structure: VAEStructure
    private let table: RenameTable

    public init(structure: VAEStructure) {
        self.structure = structure
        var t = RenameTable()
        let levels = structure.levels, layers = structure.layersPerBlock
        t.prefix("quant_conv", "quant_conv")
        t.prefix("post_quant_conv", "post_quant_conv")
        for part in ["encoder", "decoder"] {
            t.prefix("\(part).conv_in", "\(part).conv_in")
            t.prefix("\(part).conv_out", "\(part).conv_out")
            t.prefix("\(part).norm_out", "\(part).conv_norm_out")
            Self.resnet(&t, "\(part).mid.block_1", "\(part).mid_block.resnets.0")
            Self.resnet(&t, "\(part).mid.block_2", "\(part).mid_block.resnets.1")
            let sgmAttn = "\(part).mid.attn_1", attn = "\(part).mid_block.attentions.0"
            t.prefix("\(sgmAttn).norm", "\(attn).group_norm")
            for (s, d, old) in [("q", "to_q", "query"), ("k", "to_k", "key"), ("v", "to_v", "value"),
                                ("proj_out", "to_out.0", "proj_attn")] {
                t.exact("\(sgmAttn).\(s).weight", "\(attn).\(d).weight", .linearFromConv1x1)
                t.exact("\(sgmAttn).\(s).bias", "\(attn).\(d).bias")
                // diffusers before 0.14 named these query/key/value/proj_attn; diffusers still loads them.
                t.diffusersAlias("\(attn).\(old).weight", "\(sgmAttn).\(s).weight", .conv1x1FromLinear)
                t.diffusersAlias("\(attn).\(old).bias", "\(sgmAttn).\(s).bias")
            }
        }
        for i in 0..<levels {
            for j in 0..<layers {
                Self.resnet(&t, "encoder.down.\(i).block.\(j)", "encoder.down_blocks.\(i).resnets.\(j)")
            }
            if i < levels - 1 {
                t.prefix("encoder.down.\(i).downsample.conv", "encoder.down_blocks.\(i).downsamplers.0.conv")
            }
            let s = levels - 1 - i
            for j in 0...layers {
                Self.resnet(&t, "decoder.up.\(s).block.\(j)", "decoder.up_blocks.\(i).resnets.\(j)")
            }
            if s > 0 {
                t.prefix("decoder.up.\(s).upsample.conv", "decoder.up_blocks.\(i).upsamplers.0.conv")
            }
        }
        table = t
    }

    private static func resnet(_ t: inout RenameTable, _ sgm: String, _ diffusers: String) {
        for (s, d) in [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
                       ("nin_shortcut", "conv_shortcut")] {
            t.prefix("\(sgm).\(s)", "\(diffusers).\(d)")
        }
    }

    public func toDiffusers(_ name: String) -> Mapping? { table.toDiffusers(name) }
    public func toSGM(_ name: String) -> Mapping? { table.toSGM(name) }
}
