import Foundation
import MumuFormats
import MumuTensor

/// SDXL's autoencoder (diffusers `AutoencoderKL`; sgm `first_stage_model.*` names), f32, channels-last inside
/// (latents and images are NCHW at the API, converted once at entry and exit).
///
///     encoder: conv_in 3x3 -> per level i: layers_per_block resnets (-> ch[i]), then (not at the last level)
///              pad right/bottom by one + conv 3x3 stride 2 -> mid (resnet, attention, resnet)
///              -> GroupNorm + SiLU -> conv_out 3x3 (-> 2 x latent) -> quant_conv 1x1 -> mean | logvar
///     decoder: post_quant_conv 1x1 -> conv_in 3x3 (-> ch[last]) -> mid -> per level s = last ... 0:
///              layers_per_block + 1 resnets (-> ch[s]), then (s > 0) nearest 2x + conv 3x3
///              -> GroupNorm + SiLU -> conv_out 3x3 (-> 3)
///
/// ResnetBlock: GroupNorm + SiLU, conv 3x3, GroupNorm + SiLU, conv 3x3, plus the input (through a 1x1
/// `nin_shortcut` when the width changes). Mid attention: GroupNorm, q / k / v over channels, one head of
/// width C, softmax, proj_out, residual. Every GroupNorm has eps 1e-6 and `norm_num_groups` groups.
///
/// Memory: at 1024x1024 one activation of 128 channels is 0.5 GB (1 GB at 256). Resnets update their input in
/// place (the second convolution accumulates into it), the upsampling convolution reads the low-resolution
/// tensor directly (the 2x nearest copy is never built), and the downsampling convolution pads virtually, so a
/// level holds at most three full-size tensors at once.
public final class VAE: @unchecked Sendable {
    /// The network's shape: from the VAE's config.json (diffusers `AutoencoderKL`) when the checkpoint has one,
    /// else inferred from the tensors (`infer`).
    public struct Config: Equatable, Sendable {
        /// Width of each level, from the full-resolution one (SDXL [128, 256, 512, 512]).
        public var blockOutChannels: [Int]
        /// Resnets per encoder level (the decoder has one more per level).
        public var layersPerBlock: Int
        public var groups: Int
        public var inChannels: Int
        public var outChannels: Int
        public var latentChannels: Int
        /// Latents are multiplied by this after encoding and divided by it before `decode` (by the caller).
        public var scalingFactor: Float
        public var quantConv: Bool
        public var postQuantConv: Bool
        public var midAttention: Bool

        public init(blockOutChannels: [Int], layersPerBlock: Int = 2, groups: Int = 32, inChannels: Int = 3,
                    outChannels: Int = 3, latentChannels: Int = 4, scalingFactor: Float = 0.13025,
                    quantConv: Bool = true, postQuantConv: Bool = true, midAttention: Bool = true) {
            self.blockOutChannels = blockOutChannels; self.layersPerBlock = layersPerBlock; self.groups = groups
            self.inChannels = inChannels; self.outChannels = outChannels; self.latentChannels = latentChannels
            self.scalingFactor = scalingFactor; self.quantConv = quantConv; self.postQuantConv = postQuantConv
            self.midAttention = midAttention
        }

        public static let sdxl = Config(blockOutChannels: [128, 256, 512, 512])

        /// From a diffusers `AutoencoderKL` config.json. Missing fields take diffusers' defaults, except
        /// `scaling_factor`, which defaults to SDXL's 0.13025 (diffusers' class default is SD1's 0.18215; every
        /// SDXL config states it).
        public static func from(json: JSONValue, path: String) throws -> Config {
            guard json["block_out_channels"]?.arrayValue != nil, let channels = json.ints("block_out_channels", count: 0) else {
                throw DecoderError.config(path: path, reason: "the VAE config has no block_out_channels list")
            }
            if let types = json.strings("down_block_types"), types.contains(where: { $0 != "DownEncoderBlock2D" }) {
                throw DecoderError.config(path: path, reason: "VAE down blocks \(types) are not supported (DownEncoderBlock2D only)")
            }
            if let act = json.string("act_fn"), act != "silu" {
                throw DecoderError.config(path: path, reason: "VAE activation \(act) is not supported (silu only)")
            }
            let config = Config(blockOutChannels: channels, layersPerBlock: json.int("layers_per_block") ?? 1,
                                groups: json.int("norm_num_groups") ?? 32, inChannels: json.int("in_channels") ?? 3,
                                outChannels: json.int("out_channels") ?? 3, latentChannels: json.int("latent_channels") ?? 4,
                                scalingFactor: json.float("scaling_factor") ?? 0.13025,
                                quantConv: json.bool("use_quant_conv") ?? true, postQuantConv: json.bool("use_post_quant_conv") ?? true,
                                midAttention: json.bool("mid_block_add_attention") ?? true)
            try config.validate(path: path)
            return config
        }

        /// From the tensor shapes (sgm names): levels and widths from `decoder.up.N.block.0.conv1`, resnets per level
        /// from the decoder's (minus one), channel counts from conv_in / conv_out / post_quant_conv, the optional
        /// parts from their presence. Not in the shapes: the GroupNorm group count (`groups`, 32 as SDXL's and
        /// SD1's VAE; the tiny test VAE has 4) and the scaling factor (`scalingFactor`, SDXL's 0.13025).
        public static func infer(reader: WeightReader, groups: Int = 32, scalingFactor: Float = 0.13025) throws -> Config {
            var maxLevel = -1, maxResnet = -1
            let stem = reader.prefix + "decoder.up."
            for t in reader.source.tensors where t.name.hasPrefix(stem) {
                let rest = t.name.dropFirst(stem.count)
                guard let level = Int(rest.prefix { $0.isNumber }) else { continue }
                maxLevel = max(maxLevel, level)
                let after = rest.drop { $0.isNumber }
                if level == 0, after.hasPrefix(".block."), let j = Int(after.dropFirst(7).prefix { $0.isNumber }) {
                    maxResnet = max(maxResnet, j)
                }
            }
            guard maxLevel >= 0, maxResnet >= 1 else {
                throw DecoderError.config(path: reader.path, reason: "no VAE decoder levels (\(stem)N.block.M.*) found")
            }
            var channels: [Int] = []
            for s in 0...maxLevel {
                let shape = try reader.requireShape("decoder.up.\(s).block.0.conv1.weight")
                channels.append(shape[0])
            }
            let convIn = try reader.requireShape("decoder.conv_in.weight")  // [ch, latent, 3, 3]
            let convOut = try reader.requireShape("decoder.conv_out.weight")  // [out, ch0, 3, 3]
            let inChannels = reader.shape("encoder.conv_in.weight").map { $0.count > 1 ? $0[1] : 0 } ?? 3
            let config = Config(blockOutChannels: channels, layersPerBlock: maxResnet, groups: groups,
                                inChannels: inChannels, outChannels: convOut[0], latentChannels: convIn.count > 1 ? convIn[1] : 0,
                                scalingFactor: scalingFactor, quantConv: reader.has("quant_conv.weight"),
                                postQuantConv: reader.has("post_quant_conv.weight"), midAttention: reader.has("decoder.mid.attn_1.q.weight"))
            try config.validate(path: reader.path)
            return config
        }

        func validate(path: String) throws {
            guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 > 0 }), layersPerBlock > 0,
                  inChannels > 0, outChannels > 0, latentChannels > 0, groups > 0 else {
                throw DecoderError.config(path: path, reason: "VAE config is not runnable: channels \(blockOutChannels), layers per block \(layersPerBlock), groups \(groups), in \(inChannels), out \(outChannels), latent \(latentChannels)")
            }
            if let bad = blockOutChannels.first(where: { $0 % groups != 0 }) {
                throw DecoderError.config(path: path, reason: "VAE width \(bad) does not split into \(groups) GroupNorm groups (the group count is not in the tensor shapes: give the model its config)")
            }
        }
    }

    struct Attention {
        let norm: Norm
        let q, k, v, out: DenseWeight
    }

    struct Mid {
        let block1: ResBlock
        let attention: Attention?
        let block2: ResBlock
    }

    struct Encoder {
        let convIn: DenseWeight
        /// Per level: resnets and the downsampling conv (nil at the last level).
        let levels: [(resnets: [ResBlock], downsample: DenseWeight?)]
        let mid: Mid
        let normOut: Norm
        let convOut: DenseWeight
    }

    struct Decoder {
        let convIn: DenseWeight
        let mid: Mid
        /// Per sgm level s (run from the last to 0): resnets and the upsampling conv (nil at level 0).
        let levels: [(resnets: [ResBlock], upsample: DenseWeight?)]
        let normOut: Norm
        let convOut: DenseWeight
    }

    public let config: Config
    public let path: String
    /// `config.scalingFactor`: diffusers' pipeline multiplies encoded latents by it and divides latents by it
    /// before `decode`; `decode` and `encode` do not apply it.
    public var scalingFactor: Float { config.scalingFactor }
    private let encoder: Encoder?
    private let decoder: Decoder
    private let quantConv: DenseWeight?
    private let postQuantConv: DenseWeight?
    private static let eps: Float = 1e-6

    /// Loads the VAE of `checkpoint`, configured by its config.json when it has one, else inferred from the shapes.
    public convenience init(checkpoint: DecoderCheckpoint, precision: WeightPrecision = .f32) throws {
        let reader = try checkpoint.reader(.vae, precision: precision)
        let config = try checkpoint.config(.vae).map { try Config.from(json: $0, path: reader.path) }
        try self.init(reader: reader, config: config)
        WeightMemory.modelLoaded()
    }

    /// Loads every weight through `reader` (shapes checked against `config`, NaN / infinity reported by name).
    /// The encoder is optional (a decode-only VAE file loads; `encode` then throws); the decoder is required.
    public init(reader: WeightReader, config: Config? = nil) throws {
        let config = try config ?? Config.infer(reader: reader)
        try config.validate(path: reader.path)
        self.config = config
        path = reader.path
        let ch = config.blockOutChannels, levels = ch.count, top = ch[levels - 1], latent = config.latentChannels

        func resnet(_ name: String, _ cin: Int, _ cout: Int) throws -> ResBlock {
            try ResBlock(vae: reader, name, inputs: cin, outputs: cout, groups: config.groups, eps: Self.eps)
        }
        func mid(_ part: String) throws -> Mid {
            let a = "\(part).mid.attn_1"
            let attention = config.midAttention
                ? Attention(norm: try reader.norm(a + ".norm", channels: top),
                            q: try reader.linear(a + ".q", inputs: top, outputs: top),
                            k: try reader.linear(a + ".k", inputs: top, outputs: top),
                            v: try reader.linear(a + ".v", inputs: top, outputs: top),
                            out: try reader.linear(a + ".proj_out", inputs: top, outputs: top))
                : nil
            return Mid(block1: try resnet("\(part).mid.block_1", top, top), attention: attention,
                       block2: try resnet("\(part).mid.block_2", top, top))
        }

        if reader.has("encoder.conv_in.weight") {
            var encoderLevels: [(resnets: [ResBlock], downsample: DenseWeight?)] = []
            for i in 0..<levels {
                var resnets: [ResBlock] = []
                for j in 0..<config.layersPerBlock {
                    let cin = j > 0 ? ch[i] : (i > 0 ? ch[i - 1] : ch[0])
                    resnets.append(try resnet("encoder.down.\(i).block.\(j)", cin, ch[i]))
                }
                let down = i < levels - 1 ? try reader.conv("encoder.down.\(i).downsample.conv", inputs: ch[i], outputs: ch[i], kernel: 3) : nil
                encoderLevels.append((resnets, down))
            }
            encoder = Encoder(convIn: try reader.conv("encoder.conv_in", inputs: config.inChannels, outputs: ch[0], kernel: 3),
                              levels: encoderLevels, mid: try mid("encoder"),
                              normOut: try reader.norm("encoder.norm_out", channels: top),
                              convOut: try reader.conv("encoder.conv_out", inputs: top, outputs: 2 * latent, kernel: 3))
            quantConv = config.quantConv ? try reader.conv("quant_conv", inputs: 2 * latent, outputs: 2 * latent, kernel: 1) : nil
        } else {
            encoder = nil
            quantConv = nil
        }

        var decoderLevels: [(resnets: [ResBlock], upsample: DenseWeight?)] = []
        for s in 0..<levels {
            var resnets: [ResBlock] = []
            for j in 0...config.layersPerBlock {
                let cin = j > 0 ? ch[s] : (s < levels - 1 ? ch[s + 1] : top)
                resnets.append(try resnet("decoder.up.\(s).block.\(j)", cin, ch[s]))
            }
            let up = s > 0 ? try reader.conv("decoder.up.\(s).upsample.conv", inputs: ch[s], outputs: ch[s], kernel: 3) : nil
            decoderLevels.append((resnets, up))
        }
        postQuantConv = config.postQuantConv ? try reader.conv("post_quant_conv", inputs: latent, outputs: latent, kernel: 1) : nil
        decoder = Decoder(convIn: try reader.conv("decoder.conv_in", inputs: latent, outputs: top, kernel: 3),
                          mid: try mid("decoder"), levels: decoderLevels,
                          normOut: try reader.norm("decoder.norm_out", channels: ch[0]),
                          convOut: try reader.conv("decoder.conv_out", inputs: ch[0], outputs: config.outChannels, kernel: 3))
    }

    /// Latents this VAE decodes: [B, latent channels, h, w], none of them empty.
    func checkLatents(_ latents: Tensor) throws {
        guard latents.rank == 4, latents.shape[1] == config.latentChannels, latents.shape[0] > 0,
              latents.shape[2] > 0, latents.shape[3] > 0 else {
            throw DecoderError.input("VAE decode takes latents [B, \(config.latentChannels), h, w], got \(latents.shape)")
        }
    }

    /// Whether `encode` is available (the checkpoint holds the encoder).
    public var hasEncoder: Bool { encoder != nil }

    /// Latents [B, latent, h, w] (NCHW, already divided by `scalingFactor`) -> image [B, out, 8h, 8w] (for SDXL's
    /// four levels; 2^(levels-1) in general) in about [-1, 1], NCHW.
    public func decode(latents: Tensor) throws -> Tensor {
        try checkLatents(latents)
        var x = NN.nhwc(latents)
        if let postQuantConv { x = NN.conv2d(x, weight: postQuantConv, kernel: 1) }
        x = NN.conv2d(x, weight: decoder.convIn, kernel: 3, padding: 1)
        run(decoder.mid, &x)
        for level in decoder.levels.reversed() {
            for r in level.resnets { r(&x) }
            if let up = level.upsample { x = NN.conv2dUpsampled(x, weight: up) }
        }
        x = decoder.normOut.group(x, groups: config.groups, eps: Self.eps, silu: true)
        x = NN.conv2d(x, weight: decoder.convOut, kernel: 3, padding: 1)
        return NN.nchw(x)
    }

    /// Image [B, in, H, W] (NCHW, values in [-1, 1]) -> the latent distribution's mean and log-variance
    /// [B, latent, H/8, W/8] (NCHW; quant_conv applied; logvar clamped to [-30, 20] as diffusers'
    /// `DiagonalGaussianDistribution`). Multiply a sample by `scalingFactor` for the sampler.
    public func encode(image: Tensor) throws -> (mean: Tensor, logvar: Tensor) {
        guard let encoder else {
            throw DecoderError.input("VAE \(path) holds no encoder (first_stage_model.encoder.*), so it cannot encode images")
        }
        guard image.rank == 4, image.shape[1] == config.inChannels, image.shape[0] > 0 else {
            throw DecoderError.input("VAE encode takes an image [B, \(config.inChannels), H, W], got \(image.shape)")
        }
        let downsamplings = config.blockOutChannels.count - 1
        var (h, w) = (image.shape[2], image.shape[3])
        for _ in 0..<downsamplings {
            guard h >= 2, w >= 2 else {
                throw DecoderError.input("VAE encode: image \(image.shape) is too small for \(downsamplings) downsamplings")
            }
            (h, w) = (h / 2, w / 2)  // (n + 1 - 3) / 2 + 1 for n >= 2
        }
        var x = NN.conv2d(NN.nhwc(image), weight: encoder.convIn, kernel: 3, padding: 1)
        for level in encoder.levels {
            for r in level.resnets { r(&x) }
            if let down = level.downsample { x = Self.convDownsample(x, weight: down) }
        }
        run(encoder.mid, &x)
        x = encoder.normOut.group(x, groups: config.groups, eps: Self.eps, silu: true)
        x = NN.conv2d(x, weight: encoder.convOut, kernel: 3, padding: 1)
        if let quantConv { x = NN.conv2d(x, weight: quantConv, kernel: 1) }
        let moments = NN.nchw(x)  // [B, 2L, h, w]: mean channels first, then logvar
        let (b, l, plane) = (moments.shape[0], config.latentChannels, moments.shape[2] * moments.shape[3])
        var mean = Tensor(zeros: [b, l, moments.shape[2], moments.shape[3]]), logvar = mean
        for s in 0..<b {
            for i in 0..<(l * plane) {
                mean.data[s * l * plane + i] = moments.data[s * 2 * l * plane + i]
                logvar.data[s * l * plane + i] = min(max(moments.data[(s * 2 + 1) * l * plane + i], -30), 20)
            }
        }
        return (mean, logvar)
    }

    private func run(_ mid: Mid, _ x: inout Tensor) {
        mid.block1(&x)
        if let a = mid.attention {
            // Single-head self-attention over the h·w positions; NN.attention's fused kernel never forms the
            // square of scores (16,384 positions at 128x128 latents).
            let (b, c) = (x.shape[0], x.shape[3])
            let tokens = a.norm.group(x, groups: config.groups, eps: Self.eps).reshaped([b, x.count / (b * c), c])
            let attended = NN.attention(q: a.q(tokens), k: a.k(tokens), v: a.v(tokens), heads: 1, precision: .matching(a.q))
            a.out.apply(attended, addingInto: &x)
        }
        mid.block2(&x)
    }

    /// diffusers `Downsample2D` of the VAE encoder: pad (0, 1, 0, 1) (one zero column right, one zero row
    /// at the bottom), then conv 3x3 stride 2 without padding: [N, H, W, C] -> [N, (H+1-3)/2+1, (W+1-3)/2+1, C].
    static func convDownsample(_ x: Tensor, weight: DenseWeight) -> Tensor {
        let (h, w) = (x.shape[1], x.shape[2])
        return NN.conv2d(x, weight: weight, kernel: 3, stride: 2, padTopLeft: 0, outH: (h + 1 - 3) / 2 + 1, outW: (w + 1 - 3) / 2 + 1)
    }
}
