import Foundation
import MumuFormats
import MumuTensor

/// The UNet of SDXL (and of the UNet2DConditionModel family: SD1.x, the refiner, tiny test models), built from a
/// `UNetConfig` and sgm-named weights, run channels-last on `NN` kernels. One forward pass is what diffusers'
/// `UNet2DConditionModel.forward(sample, timestep, encoder_hidden_states, added_cond_kwargs)` computes.
public final class UNet: @unchecked Sendable {
    public let config: UNetConfig
    public let path: String
    let timeEmbed1: DenseWeight, timeEmbed2: DenseWeight
    let labelEmbed1: DenseWeight?, labelEmbed2: DenseWeight?
    let convIn: DenseWeight
    let down: [Block]
    let middle: [Block]
    let up: [Block]
    let outNorm: Norm
    let convOut: DenseWeight

    /// One entry of diffusers' down / mid / up module lists, in execution order.
    enum Block {
        case res(ResBlock)
        case transformer(SpatialTransformer)
        case downsample(DenseWeight)
        case upsample(DenseWeight)
        /// Pushes the current activation onto the skip stack (down side) or pops and concatenates (before an up resblock).
        case push
        case pop
    }

    /// Loads the UNet of `checkpoint`: configuration from the diffusers config or the architecture descriptor,
    /// else inferred from the shapes; every weight checked for shape and finiteness as it is read.
    public convenience init(checkpoint: DecoderCheckpoint, precision: WeightPrecision = .f32) throws {
        let reader = try checkpoint.reader(.unet, precision: precision)
        let config = try checkpoint.config(.unet).map { try UNetConfig.fromDiffusers($0, path: checkpoint.path) } ?? UNetConfig.infer(reader)
        try self.init(config: config, reader: reader)
        WeightMemory.modelLoaded()
    }

    public init(config c: UNetConfig, reader r: WeightReader) throws {
        config = c
        path = r.path
        let c0 = c.blockChannels[0]
        let temb = try r.requireShape("time_embed.0.weight")[0]
        timeEmbed1 = try r.linear("time_embed.0", inputs: c0, outputs: temb)
        timeEmbed2 = try r.linear("time_embed.2", inputs: temb, outputs: temb)
        if let admIn = c.admIn {
            labelEmbed1 = try r.linear("label_emb.0.0", inputs: admIn, outputs: temb)
            labelEmbed2 = try r.linear("label_emb.0.2", inputs: temb, outputs: temb)
        } else {
            labelEmbed1 = nil; labelEmbed2 = nil
        }
        convIn = try r.conv("input_blocks.0.0", inputs: c.inChannels, outputs: c0, kernel: 3)
        let n = c.levels, lpb = c.layersPerBlock
        func transformer(_ prefix: String, channels: Int, heads: Int, depth: Int) throws -> SpatialTransformer {
            try SpatialTransformer(r, prefix, channels: channels, heads: heads, depth: depth, contextDim: c.contextDim,
                                   groups: c.normGroups, linearProjection: c.linearProjection)
        }
        // Down: conv_in output, then every resblock(+transformer) and downsampler output, go on the skip stack.
        var skipChannels = [c0]
        var blocks: [Block] = [.push]
        var ch = c0
        for i in 0..<n {
            for j in 0..<lpb {
                let idx = 1 + i * (lpb + 1) + j
                blocks.append(.res(try ResBlock(unet: r, "input_blocks.\(idx).0", inputs: ch, outputs: c.blockChannels[i], temb: temb, groups: c.normGroups, eps: c.normEps)))
                ch = c.blockChannels[i]
                if c.downAttention[i] {
                    blocks.append(.transformer(try transformer("input_blocks.\(idx).1", channels: ch, heads: c.heads[i], depth: c.downDepth[i])))
                }
                blocks.append(.push); skipChannels.append(ch)
            }
            if i < n - 1 {
                blocks.append(.downsample(try r.conv("input_blocks.\((i + 1) * (lpb + 1)).0.op", inputs: ch, outputs: ch, kernel: 3)))
                blocks.append(.push); skipChannels.append(ch)
            }
        }
        down = blocks
        middle = [
            .res(try ResBlock(unet: r, "middle_block.0", inputs: ch, outputs: ch, temb: temb, groups: c.normGroups, eps: c.normEps)),
            .transformer(try transformer("middle_block.1", channels: ch, heads: c.heads[n - 1], depth: c.midDepth)),
            .res(try ResBlock(unet: r, "middle_block.2", inputs: ch, outputs: ch, temb: temb, groups: c.normGroups, eps: c.normEps)),
        ]
        // Up, deepest first: each resblock takes the running activation concatenated with one skip.
        blocks = []
        for u in 0..<n {
            let level = n - 1 - u
            let out = c.blockChannels[level]
            for j in 0...lpb {
                let idx = u * (lpb + 1) + j
                let skip = skipChannels.removeLast()
                blocks.append(.pop)
                blocks.append(.res(try ResBlock(unet: r, "output_blocks.\(idx).0", inputs: ch + skip, outputs: out, temb: temb, groups: c.normGroups, eps: c.normEps)))
                ch = out
                if c.upAttention[u] {
                    blocks.append(.transformer(try transformer("output_blocks.\(idx).1", channels: ch, heads: c.heads[level], depth: c.upDepth[u])))
                }
                if j == lpb && u < n - 1 {
                    blocks.append(.upsample(try r.conv("output_blocks.\(idx).\(c.upAttention[u] ? 2 : 1).conv", inputs: ch, outputs: ch, kernel: 3)))
                }
            }
        }
        up = blocks
        outNorm = try r.norm("out.0", channels: ch)
        convOut = try r.conv("out.2", inputs: ch, outputs: c.outChannels, kernel: 3)
    }

    /// One evaluation. `sample` [B, in, H, W] (NCHW, as diffusers), `timesteps` one per sample (or one for all),
    /// `context` [B, T, contextDim], and for SDXL `pooled` [B, pooled width] and `timeIds` [B, k] (original size,
    /// crop top-left, target size: k = 6). Returns the prediction [B, out, H, W]. H and W need not be multiples of
    /// 2^(levels-1): the up path resizes to each skip's size, as diffusers does.
    public func callAsFunction(_ sample: Tensor, timesteps: [Float], context: Tensor, pooled: Tensor? = nil, timeIds: Tensor? = nil) throws -> Tensor {
        let c = config
        guard sample.rank == 4, sample.shape[1] == c.inChannels else {
            throw DecoderError.input("UNet sample must be [B, \(c.inChannels), H, W], got \(sample.shape)")
        }
        let b = sample.shape[0], h = sample.shape[2], w = sample.shape[3]
        guard h > 0, w > 0 else { throw DecoderError.input("UNet sample \(h)x\(w) is empty") }
        guard context.rank == 3, context.shape[0] == b, context.shape[2] == c.contextDim, context.shape[1] > 0 else {
            throw DecoderError.input("UNet context must be [\(b), T, \(c.contextDim)], got \(context.shape)")
        }
        guard timesteps.count == b || timesteps.count == 1 else {
            throw DecoderError.input("UNet got \(timesteps.count) timesteps for a batch of \(b)")
        }
        let ts = timesteps.count == b ? timesteps : Array(repeating: timesteps[0], count: b)

        // Time embedding (+ SDXL's pooled text and time ids), then SiLU once: every resblock's emb_layers start with it.
        var emb = timeEmbed2(silu(timeEmbed1(NN.timestepEmbedding(ts, dim: c.blockChannels[0]))))
        if let l1 = labelEmbed1, let l2 = labelEmbed2, let addTimeDim = c.addTimeDim, let admIn = c.admIn {
            guard let pooled, let timeIds, pooled.rank == 2, timeIds.rank == 2, pooled.shape[0] == b, timeIds.shape[0] == b,
                  pooled.shape[1] + timeIds.shape[1] * addTimeDim == admIn else {
                throw DecoderError.input("UNet needs pooled [\(b), P] and time ids [\(b), k] with P + k*\(addTimeDim) = \(admIn), got \(pooled?.shape ?? []) and \(timeIds?.shape ?? [])")
            }
            let ids = NN.timestepEmbedding(timeIds.data, dim: addTimeDim).reshaped([b, timeIds.shape[1] * addTimeDim])
            l2.apply(silu(l1(NN.concatChannels(pooled, ids))), addingInto: &emb)
        }
        let embAct = silu(emb)

        var x = NN.conv2d(NN.nhwc(sample), weight: convIn, kernel: 3, padding: 1)
        var skips: [Tensor] = []
        func run(_ blocks: [Block]) {
            for block in blocks {
                switch block {
                case let .res(rb): rb(&x, emb: embAct)
                case let .transformer(t): x = t(x, context: context)
                case let .downsample(conv): x = NN.conv2d(x, weight: conv, kernel: 3, stride: 2, padding: 1)
                case let .upsample(conv):
                    // To the size of the skip it meets next: 2x, or (latents not a multiple of 2^(levels-1), as
                    // diffusers' forward_upsample_size allows) the skip's own size.
                    let (th, tw) = skips.last.map { ($0.shape[1], $0.shape[2]) } ?? (2 * x.shape[1], 2 * x.shape[2])
                    if th == 2 * x.shape[1] && tw == 2 * x.shape[2] {
                        x = NN.conv2dUpsampled(x, weight: conv)
                    } else {
                        x = NN.conv2d(NN.upsampleNearest(x, height: th, width: tw), weight: conv, kernel: 3, padding: 1)
                    }
                case .push: skips.append(x)
                case .pop: x = NN.concatChannels(x, skips.removeLast())
                }
            }
        }
        run(down)
        run(middle)
        run(up)
        x = NN.conv2d(outNorm.group(x, groups: c.normGroups, eps: c.normEps, silu: true), weight: convOut, kernel: 3, padding: 1)
        return NN.nchw(x)
    }

    /// Bytes of weights held.
    public var weightBytes: Int {
        var total = timeEmbed1.byteCount + timeEmbed2.byteCount + (labelEmbed1?.byteCount ?? 0) + (labelEmbed2?.byteCount ?? 0)
            + convIn.byteCount + convOut.byteCount
        for block in down + middle + up {
            switch block {
            case let .res(rb): total += rb.byteCount
            case let .transformer(t): total += t.byteCount
            case let .downsample(w), let .upsample(w): total += w.byteCount
            case .push, .pop: break
            }
        }
        return total
    }
}

private func silu(_ x: Tensor) -> Tensor {
    var y = x
    NN.silu(&y)
    return y
}

/// SpatialTransformer (sgm) / Transformer2DModel (diffusers): GroupNorm (eps 1e-6), proj_in, `depth` transformer
/// blocks over the H·W tokens (self-attention, cross-attention to the context, GEGLU feed-forward, each pre-LayerNorm
/// with a residual), proj_out, + the input.
final class SpatialTransformer: @unchecked Sendable {
    let norm: Norm, projIn: DenseWeight, projOut: DenseWeight
    let blocks: [TransformerBlock]
    let groups: Int

    init(_ r: WeightReader, _ p: String, channels: Int, heads: Int, depth: Int, contextDim: Int, groups: Int, linearProjection: Bool) throws {
        norm = try r.norm("\(p).norm", channels: channels)
        // proj_in / proj_out: Linear [C, C] (SDXL) or a 1x1 conv [C, C, 1, 1] (SD1), the same product on channels-last rows.
        projIn = try r.linear("\(p).proj_in", inputs: channels, outputs: channels)
        projOut = try r.linear("\(p).proj_out", inputs: channels, outputs: channels)
        blocks = try (0..<depth).map { try TransformerBlock(r, "\(p).transformer_blocks.\($0)", channels: channels, heads: heads, contextDim: contextDim) }
        self.groups = groups
    }

    /// x [B, H, W, C], context [B, T, contextDim].
    func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var hidden = projIn(norm.group(x, groups: groups, eps: 1e-6).reshaped([b, h * w, c]))
        for block in blocks { block(&hidden, context: context) }
        var out = x
        projOut.apply(hidden, addingInto: &out)
        return out
    }

    var byteCount: Int { projIn.byteCount + projOut.byteCount + blocks.reduce(0) { $0 + $1.byteCount } }
}

/// BasicTransformerBlock: x += attn1(norm1 x); x += attn2(norm2 x, context); x += ff(norm3 x).
final class TransformerBlock: @unchecked Sendable {
    let norm1: Norm, norm2: Norm, norm3: Norm
    let attn1: Attention, attn2: Attention
    let ffIn: DenseWeight, ffOut: DenseWeight

    init(_ r: WeightReader, _ p: String, channels: Int, heads: Int, contextDim: Int) throws {
        norm1 = try r.norm("\(p).norm1", channels: channels)
        norm2 = try r.norm("\(p).norm2", channels: channels)
        norm3 = try r.norm("\(p).norm3", channels: channels)
        attn1 = try Attention(r, "\(p).attn1", channels: channels, contextDim: channels, heads: heads)
        attn2 = try Attention(r, "\(p).attn2", channels: channels, contextDim: contextDim, heads: heads)
        ffIn = try r.linear("\(p).ff.net.0.proj", inputs: channels, outputs: 8 * channels)
        ffOut = try r.linear("\(p).ff.net.2", inputs: 4 * channels, outputs: channels)
    }

    func callAsFunction(_ x: inout Tensor, context: Tensor) {
        let n1 = norm1.layer(x, eps: 1e-5)
        attn1(n1, context: n1, addingInto: &x)
        attn2(norm2.layer(x, eps: 1e-5), context: context, addingInto: &x)
        ffOut.apply(NN.geglu(ffIn(norm3.layer(x, eps: 1e-5))), addingInto: &x)
    }

    var byteCount: Int { attn1.byteCount + attn2.byteCount + ffIn.byteCount + ffOut.byteCount }
}

/// Multi-head attention with separate q / k / v projections (no bias) and an output projection (with bias).
final class Attention: @unchecked Sendable {
    let q: DenseWeight, k: DenseWeight, v: DenseWeight, out: DenseWeight
    let heads: Int

    init(_ r: WeightReader, _ p: String, channels: Int, contextDim: Int, heads: Int) throws {
        q = try r.linear("\(p).to_q", inputs: channels, outputs: channels, bias: false)
        k = try r.linear("\(p).to_k", inputs: contextDim, outputs: channels, bias: false)
        v = try r.linear("\(p).to_v", inputs: contextDim, outputs: channels, bias: false)
        out = try r.linear("\(p).to_out.0", inputs: channels, outputs: channels)
        guard heads > 0, channels % heads == 0 else {
            throw DecoderError.config(path: r.path, reason: "\(r.prefix)\(p): \(channels) channels do not split into \(heads) heads")
        }
        self.heads = heads
    }

    /// y += out(attention(q(x), k(context), v(context))).
    func callAsFunction(_ x: Tensor, context: Tensor, addingInto y: inout Tensor) {
        let a = NN.attention(q: q(x), k: k(context), v: v(context), heads: heads, precision: .matching(q))
        out.apply(a, addingInto: &y)
    }

    var byteCount: Int { q.byteCount + k.byteCount + v.byteCount + out.byteCount }
}
