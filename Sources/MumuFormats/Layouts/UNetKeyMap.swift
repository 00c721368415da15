/// The shape of a UNet's block tree, which fixes how sgm block numbers relate to diffusers names.
/// sgm numbers `input_blocks` 0 (conv_in), then per level `layersPerBlock` resnet(+attention) blocks and
/// one downsampler block (not after the last level); `output_blocks` per level `layersPerBlock + 1`
/// blocks, the last of a level also holding the upsampler.
public struct UNetStructure: Hashable, Sendable {
    /// Resolution levels (SDXL 3; SD1 and the SDXL refiner 4).
    public var levels: Int
    /// Resnets per down level (up levels have one more).
    public var layersPerBlock: Int
    /// Whether each down level (diffusers `down_blocks.i`) has attentions.
    public var downAttention: [Bool]
    /// Whether each up level (diffusers `up_blocks.i`, lowest resolution first) has attentions.
    public var upAttention: [Bool]
    /// Whether the middle block has an attention between its two resnets (sgm `middle_block.1`);
    /// without one the resnets are `middle_block.0` and `.1`.
    public var midAttention: Bool

    public init(levels: Int, layersPerBlock: Int, downAttention: [Bool], upAttention: [Bool], midAttention: Bool = true) {
        self.levels = levels; self.layersPerBlock = layersPerBlock
        self.downAttention = downAttention; self.upAttention = upAttention
        self.midAttention = midAttention
    }

    public static let sdxl = UNetStructure(levels: 3, layersPerBlock: 2,
                                           downAttention: [false, true, true], upAttention: [true, true, false])
    public static let sdxlRefiner = UNetStructure(levels: 4, layersPerBlock: 2,
                                                  downAttention: [false, true, true, false], upAttention: [false, true, true, false])
    public static let sd1 = UNetStructure(levels: 4, layersPerBlock: 2,
                                          downAttention: [true, true, true, false], upAttention: [false, true, true, true])

    /// The structure from sgm UNet names (`input_blocks.4.1.proj_in.weight`, ...); nil without input blocks.
    /// Levels and layers come from the downsamplers' positions (`input_blocks.N.0.op` sits at N = k(L+1)).
    public static func infer(sgmNames names: [String]) -> UNetStructure? {
        var maxInput = -1
        var opBlocks = Set<Int>()
        var inputAttention = Set<Int>(), outputAttention = Set<Int>()
        var midResnetOnly = false
        for name in names {
            if let (n, rest) = NameParts.indexAndRest(after: "input_blocks.", in: name) {
                maxInput = max(maxInput, n)
                if rest.hasPrefix("0.op.") { opBlocks.insert(n) }
                if rest.hasPrefix("1.") { inputAttention.insert(n) }
            } else if let (n, rest) = NameParts.indexAndRest(after: "output_blocks.", in: name) {
                if rest.hasPrefix("1."), !rest.hasPrefix("1.conv.") { outputAttention.insert(n) }
            } else if name.hasPrefix("middle_block.1."),
                      ["in_layers.", "emb_layers.", "out_layers.", "skip_connection."].contains(where: { name.dropFirst(15).hasPrefix($0) }) {
                midResnetOnly = true
            }
        }
        guard maxInput >= 1 else { return nil }
        let layers = opBlocks.min().map { $0 - 1 } ?? maxInput
        guard layers >= 1 else { return nil }
        let levels = opBlocks.count + 1
        let down = (0..<levels).map { i in (0..<layers).contains { inputAttention.contains(i * (layers + 1) + $0 + 1) } }
        let up = (0..<levels).map { i in (0...layers).contains { outputAttention.contains(i * (layers + 1) + $0) } }
        return UNetStructure(levels: levels, layersPerBlock: layers, downAttention: down, upAttention: up,
                             midAttention: !midResnetOnly)
    }

    /// The structure from diffusers UNet names (`down_blocks.1.attentions.0.…`); nil without down blocks.
    public static func infer(diffusersNames names: [String]) -> UNetStructure? {
        var maxLevel = -1, maxResnet = -1
        var down = Set<Int>(), up = Set<Int>()
        var midResnets = false, midAttention = false
        for name in names {
            if let (i, rest) = NameParts.indexAndRest(after: "down_blocks.", in: name) {
                maxLevel = max(maxLevel, i)
                if let j = NameParts.index(after: "resnets.", in: rest) { maxResnet = max(maxResnet, j) }
                if rest.hasPrefix("attentions.") { down.insert(i) }
            } else if let (i, rest) = NameParts.indexAndRest(after: "up_blocks.", in: name) {
                maxLevel = max(maxLevel, i)
                if rest.hasPrefix("attentions.") { up.insert(i) }
            } else if name.hasPrefix("mid_block.resnets.") {
                midResnets = true
            } else if name.hasPrefix("mid_block.attentions.") {
                midAttention = true
            }
        }
        guard maxLevel >= 0, maxResnet >= 0 else { return nil }
        let levels = maxLevel + 1
        return UNetStructure(levels: levels, layersPerBlock: maxResnet + 1,
                             downAttention: (0..<levels).map(down.contains), upAttention: (0..<levels).map(up.contains),
                             midAttention: midAttention || !midResnets)
    }

    /// The structure a diffusers `unet/config.json` states (`layers_per_block`, `down_block_types`,
    /// `up_block_types`, `mid_block_type`); nil when those are missing or disagree.
    public init?(diffusersConfig config: JSONValue) {
        guard let downTypes = config["down_block_types"]?.arrayValue?.compactMap(\.stringValue),
              let upTypes = config["up_block_types"]?.arrayValue?.compactMap(\.stringValue),
              downTypes.count == upTypes.count, !downTypes.isEmpty else { return nil }
        let layers: Int
        if let l = config["layers_per_block"]?.intValue { layers = l }
        else if let ls = config["layers_per_block"]?.arrayValue?.compactMap(\.intValue), let l = ls.first,
                ls.count == downTypes.count, ls.allSatisfy({ $0 == l }) { layers = l }
        else { return nil }
        // diffusers' default mid block is UNetMidBlock2DCrossAttn; "UNetMidBlock2D" has no attention.
        let mid = config["mid_block_type"]?.stringValue ?? "UNetMidBlock2DCrossAttn"
        self.init(levels: downTypes.count, layersPerBlock: layers,
                  downAttention: downTypes.map { $0.contains("CrossAttn") },
                  upAttention: upTypes.map { $0.contains("CrossAttn") },
                  midAttention: mid.contains("CrossAttn"))
    }
}

/// UNet names, sgm <-> diffusers (diffusers `convert_ldm_unet_checkpoint` and
/// `convert_diffusers_to_original_sdxl.py`), for any `UNetStructure`. Transformer internals, time and
/// label embeddings carry their remainder over unchanged; resnets rename their layers.
public struct UNetKeyMap: ComponentKeyMap {
    public let structure: UNetStructure
    private let table: RenameTable

    public init(structure: UNetStructure) {
        self.structure = structure
        var t = RenameTable()
        let levels = structure.levels, layers = structure.layersPerBlock

        t.prefix("time_embed.0", "time_embedding.linear_1")
        t.prefix("time_embed.2", "time_embedding.linear_2")
        t.prefix("label_emb.0.0", "add_embedding.linear_1")
        t.prefix("label_emb.0.2", "add_embedding.linear_2")
        t.prefix("input_blocks.0.0", "conv_in")
        t.prefix("out.0", "conv_norm_out")
        t.prefix("out.2", "conv_out")

        for i in 0..<levels {
            for j in 0..<layers {
                let n = i * (layers + 1) + j + 1
                Self.resnet(&t, "input_blocks.\(n).0", "down_blocks.\(i).resnets.\(j)")
                if structure.downAttention[safe: i] {
                    t.prefix("input_blocks.\(n).1", "down_blocks.\(i).attentions.\(j)")
                }
            }
            if i < levels - 1 {
                t.prefix("input_blocks.\((i + 1) * (layers + 1)).0.op", "down_blocks.\(i).downsamplers.0.conv")
            }
        }

        Self.resnet(&t, "middle_block.0", "mid_block.resnets.0")
        if structure.midAttention {
            t.prefix("middle_block.1", "mid_block.attentions.0")
            Self.resnet(&t, "middle_block.2", "mid_block.resnets.1")
        } else {
            Self.resnet(&t, "middle_block.1", "mid_block.resnets.1")
        }

        for i in 0..<levels {
            let attention = structure.upAttention[safe: i]
            for j in 0...layers {
                let n = i * (layers + 1) + j
                Self.resnet(&t, "output_blocks.\(n).0", "up_blocks.\(i).resnets.\(j)")
                if attention { t.prefix("output_blocks.\(n).1", "up_blocks.\(i).attentions.\(j)") }
            }
            if i < levels - 1 {
                let n = i * (layers + 1) + layers
                t.prefix("output_blocks.\(n).\(attention ? 2 : 1).conv", "up_blocks.\(i).upsamplers.0.conv")
            }
        }
        table = t
    }

    /// The layers of a ResBlock: sgm `in_layers.0` = diffusers `norm1`, and so on.
    private static func resnet(_ t: inout RenameTable, _ sgm: String, _ diffusers: String) {
        for (s, d) in [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
                       ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut")] {
            t.prefix("\(sgm).\(s)", "\(diffusers).\(d)")
        }
    }

    public func toDiffusers(_ name: String) -> Mapping? { table.toDiffusers(name) }
    public func toSGM(_ name: String) -> Mapping? { table.toSGM(name) }
}

fileprivate extension Array where Element == Bool {
    /// The flag at `i`, false past the end.
    subscript(safe i: Int) -> Bool { indices.contains(i) ? self[i] : false }
}
