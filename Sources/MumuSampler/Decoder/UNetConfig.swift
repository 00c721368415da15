import MumuFormats

/// The shape of a UNet2DConditionModel-family UNet (SDXL base and refiner, SD1.x, tiny test models): what
/// diffusers' `config.json` says, reduced to what the forward pass needs.
public struct UNetConfig: Sendable, Equatable {
    public var inChannels: Int
    public var outChannels: Int
    /// Channels per resolution level (diffusers `block_out_channels`).
    public var blockChannels: [Int]
    public var layersPerBlock: Int
    /// Per level, whether the down block has transformers (`CrossAttnDownBlock2D`).
    public var downAttention: [Bool]
    /// Per up block (deepest first), whether it has transformers (`CrossAttnUpBlock2D`).
    public var upAttention: [Bool]
    /// Transformer blocks per transformer, per level (down) and per up block (deepest first); 0 without transformers.
    public var downDepth: [Int]
    public var upDepth: [Int]
    public var midDepth: Int
    /// Attention heads per level (down order); up blocks use them reversed, the middle the last.
    public var heads: [Int]
    public var contextDim: Int
    /// proj_in / proj_out are Linear (SDXL) rather than 1x1 convs (SD1): the same product on channels-last rows.
    public var linearProjection: Bool
    public var normGroups: Int
    public var normEps: Float
    /// SDXL's added conditioning: the sinusoidal width of each time id (256) and the input width of the
    /// add embedding (pooled text + 6 time ids = 2816); nil for a UNet without it.
    public var addTimeDim: Int?
    public var admIn: Int?

    public var levels: Int { blockChannels.count }

    /// From a diffusers `UNet2DConditionModel` config. Settings this implementation does not run are refused by name.
    public static func fromDiffusers(_ c: JSONValue, path: String) throws -> UNetConfig {
        func need<T>(_ v: T?, _ key: String) throws -> T {
            guard let v else { throw DecoderError.config(path: path, reason: "UNet config: '\(key)' is missing or not understood") }
            return v
        }
        let channels = try need(c.ints("block_out_channels", count: 0), "block_out_channels")
        let n = channels.count
        guard n >= 1 else { throw DecoderError.config(path: path, reason: "UNet config: block_out_channels is empty") }
        let down = try need(c.strings("down_block_types"), "down_block_types")
        let up = try need(c.strings("up_block_types"), "up_block_types")
        guard down.count == n, up.count == n else {
            throw DecoderError.config(path: path, reason: "UNet config: \(n) levels but \(down.count) down and \(up.count) up block types")
        }
        let known: Set<String> = ["DownBlock2D", "CrossAttnDownBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"]
        if let odd = (down + up).first(where: { !known.contains($0) }) {
            throw DecoderError.config(path: path, reason: "UNet config: block type \(odd) is not supported")
        }
        // diffusers' legacy naming: attention_head_dim is the head COUNT when num_attention_heads is null.
        let heads = try need(c.ints("num_attention_heads", count: n) ?? c.ints("attention_head_dim", count: n), "attention_head_dim")
        let depth = c.ints("transformer_layers_per_block", count: n) ?? Array(repeating: 1, count: n)
        let upDepth = c.ints("reverse_transformer_layers_per_block", count: n) ?? depth.reversed()
        for (key, bad) in [("upcast_attention", c.bool("upcast_attention") == true), ("only_cross_attention", c.bool("only_cross_attention") == true),
                           ("dual_cross_attention", c.bool("dual_cross_attention") == true),
                           ("class_embed_type", c.string("class_embed_type") != nil),
                           ("resnet_time_scale_shift", (c.string("resnet_time_scale_shift") ?? "default") != "default"),
                           ("time_embedding_type", (c.string("time_embedding_type") ?? "positional") != "positional"),
                           ("freq_shift", (c.int("freq_shift") ?? 0) != 0), ("flip_sin_to_cos", c.bool("flip_sin_to_cos") == false),
                           ("conv_in_kernel", (c.int("conv_in_kernel") ?? 3) != 3)] where bad {
            throw DecoderError.config(path: path, reason: "UNet config: \(key) = \(c[key].map(JSONWriter.write) ?? "?") is not supported")
        }
        var addTimeDim: Int?, admIn: Int?
        if let kind = c.string("addition_embed_type") {
            guard kind == "text_time" else { throw DecoderError.config(path: path, reason: "UNet config: addition_embed_type \(kind) is not supported") }
            addTimeDim = try need(c.int("addition_time_embed_dim"), "addition_time_embed_dim")
            admIn = try need(c.int("projection_class_embeddings_input_dim"), "projection_class_embeddings_input_dim")
        }
        return UNetConfig(
            inChannels: c.int("in_channels") ?? 4, outChannels: c.int("out_channels") ?? 4,
            blockChannels: channels, layersPerBlock: c.int("layers_per_block") ?? 2,
            downAttention: down.map { $0.hasPrefix("CrossAttn") }, upAttention: up.map { $0.hasPrefix("CrossAttn") },
            // Depth only means something where there are transformers (SDXL's config says 1 for its first level).
            downDepth: zip(down, depth).map { $0.hasPrefix("CrossAttn") ? $1 : 0 },
            upDepth: zip(up, upDepth).map { $0.hasPrefix("CrossAttn") ? $1 : 0 }, midDepth: depth[n - 1], heads: heads,
            contextDim: try need(c.int("cross_attention_dim"), "cross_attention_dim"),
            linearProjection: c.bool("use_linear_projection") ?? false,
            normGroups: c.int("norm_num_groups") ?? 32, normEps: c.float("norm_eps") ?? 1e-5,
            addTimeDim: addTimeDim, admIn: admIn)
    }

    /// From the tensor shapes alone (a single file of an architecture mumu has no descriptor for), as ComfyUI's
    /// model detection does: widths from the resblocks, transformer depth from the `transformer_blocks.N` present,
    /// context width from `attn2.to_k`, add-embedding width from `label_emb.0.0`. Heads are not stored in the
    /// weights: `headDim` (64 for SDXL and SD2; SD1 uses 8 heads instead) sets them.
    public static func infer(_ r: WeightReader, headDim: Int = 64) throws -> UNetConfig {
        let path = r.path
        let conv = try r.requireShape("input_blocks.0.0.weight")
        guard conv.count == 4 else { throw DecoderError.wrongShape(path: path, tensor: r.prefix + "input_blocks.0.0.weight", expected: [-1, -1, 3, 3], found: conv) }
        let outShape = try r.requireShape("out.2.weight")
        // Blocks of the input side: input_blocks.N.0 is a resblock (in_layers) or a downsampler (op).
        var index = 1, levelChannels: [Int] = [], attention: [Bool] = [], depth: [Int] = []
        var lpb = 0
        while r.has("input_blocks.\(index).0.in_layers.2.weight") {
            var count = 0, width = 0, attn = false, d = 0
            while r.has("input_blocks.\(index).0.in_layers.2.weight") {
                width = try r.requireShape("input_blocks.\(index).0.in_layers.2.weight")[0]
                if r.has("input_blocks.\(index).1.proj_in.weight") {
                    attn = true
                    var k = 0
                    while r.has("input_blocks.\(index).1.transformer_blocks.\(k).attn1.to_q.weight") { k += 1 }
                    d = k
                }
                count += 1; index += 1
            }
            lpb = max(lpb, count)
            levelChannels.append(width); attention.append(attn); depth.append(d)
            if r.has("input_blocks.\(index).0.op.weight") { index += 1 } else { break }
        }
        guard !levelChannels.isEmpty else { throw DecoderError.config(path: path, reason: "UNet: no resblocks under \(r.prefix)input_blocks") }
        let n = levelChannels.count
        // Up side, deepest first: output_blocks.(u*(lpb+1)+j).1 holds a transformer.
        var upAttention: [Bool] = [], upDepth: [Int] = []
        for u in 0..<n {
            let blk = "output_blocks.\(u * (lpb + 1))"
            var k = 0
            while r.has("\(blk).1.transformer_blocks.\(k).attn1.to_q.weight") { k += 1 }
            upAttention.append(k > 0); upDepth.append(k)
        }
        var mid = 0
        while r.has("middle_block.1.transformer_blocks.\(mid).attn1.to_q.weight") { mid += 1 }
        var context = 0
        if let level = attention.firstIndex(of: true) {
            context = try r.requireShape("input_blocks.\(1 + level * (lpb + 1)).1.transformer_blocks.0.attn2.to_k.weight")[1]
        } else if mid > 0 {
            context = try r.requireShape("middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1]
        }
        let linear = attention.firstIndex(of: true).map { r.shape("input_blocks.\(1 + $0 * (lpb + 1)).1.proj_in.weight")?.count == 2 } ?? true
        var addTimeDim: Int?, admIn: Int?
        if let label = r.shape("label_emb.0.0.weight") {
            admIn = label[1]
            // SDXL: the add embedding takes the pooled text (1280) and six time ids of 256 each.
            addTimeDim = 256
        }
        return UNetConfig(inChannels: conv[1], outChannels: outShape[0], blockChannels: levelChannels, layersPerBlock: lpb,
                          downAttention: attention, upAttention: upAttention, downDepth: depth, upDepth: upDepth, midDepth: mid,
                          heads: levelChannels.map { max(1, $0 / headDim) }, contextDim: context, linearProjection: linear,
                          normGroups: 32, normEps: 1e-5, addTimeDim: addTimeDim, admIn: admIn)
    }
}
