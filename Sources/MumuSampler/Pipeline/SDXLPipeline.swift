import Foundation
import MumuFormats
import MumuTensor

/// What one generation is asked for (the settings a user gives `mumu generate` and the infotext records).
public struct GenerationSettings: Sendable, Equatable {
    public var prompt: String
    public var negativePrompt = ""
    public var width = 1024
    public var height = 1024
    public var steps = 30
    /// Classifier-free guidance scale; at 1 or below the UNet runs once per step, without the negative prompt.
    public var cfg: Float = 7
    public var seed: UInt64 = 0
    public var sampler: SamplerKind = .euler
    public var spacing: NoiseSchedule.Spacing = .leading
    public var karras = false
    /// nil: what the checkpoint says (its scheduler config or ModelSpec), else epsilon.
    public var prediction: Prediction?
    /// Images per prompt (one batch; their latents are one draw of the generator, as diffusers draws them).
    public var images = 1

    public init(prompt: String) { self.prompt = prompt }

    /// Whether classifier-free guidance runs (diffusers: guidance_scale > 1).
    public var guided: Bool { cfg > 1 }

    /// The checks a user gets before any model is loaded.
    public func validate() throws {
        func bad(_ m: String) -> GenerationError { .invalidSettings(m) }
        guard width > 0, height > 0, width % 8 == 0, height % 8 == 0 else {
            throw bad("size \(width)x\(height): width and height must be positive multiples of 8 (the VAE works on 8x8 pixel blocks)")
        }
        guard width <= 8192, height <= 8192 else { throw bad("size \(width)x\(height): at most 8192 pixels a side") }
        guard steps >= 1 && steps <= 1000 else { throw bad("steps \(steps): must be in 1...1000") }
        guard cfg >= 0, cfg.isFinite else { throw bad("cfg \(cfg): the guidance scale must be a finite number >= 0") }
        guard images >= 1 && images <= 64 else { throw bad("images \(images): must be in 1...64") }
        if karras && sampler == .ddim { throw bad("ddim walks its own timesteps; Karras sigmas are for euler, euler_a and dpmpp_2m") }
    }
}

/// SDXL's conditioning for a batch: `context` [B, T, 2048] (CLIP-L and bigG penultimate states side by side)
/// and `pooled` [B, 1280] (bigG's projected EOS state). Also what `--conditioning FILE` provides.
public struct Conditioning: Sendable {
    public var context: Tensor
    public var pooled: Tensor

    public init(context: Tensor, pooled: Tensor) {
        self.context = context
        self.pooled = pooled
    }

    public var batch: Int { context.shape[0] }

    /// Zeros of the same shapes (diffusers SDXL's unconditional input for an empty negative prompt).
    public func zeros() -> Conditioning {
        Conditioning(context: Tensor(zeros: context.shape), pooled: Tensor(zeros: pooled.shape))
    }

    /// Each row repeated `times` times in place (a prompt's conditioning for `times` images).
    public func repeated(_ times: Int) -> Conditioning {
        if times == 1 { return self }
        func rep(_ t: Tensor) -> Tensor {
            let row = t.count / t.shape[0]
            var data: [Float] = []
            data.reserveCapacity(t.count * times)
            for b in 0..<t.shape[0] {
                for _ in 0..<times { data.append(contentsOf: t.data[b * row..<(b + 1) * row]) }
            }
            var shape = t.shape
            shape[0] *= times
            return Tensor(shape: shape, data: data)
        }
        return Conditioning(context: rep(context), pooled: rep(pooled))
    }

    /// Rows of `self` then rows of `other` (batch concatenation: the unconditional half first, as diffusers).
    public func stacked(over other: Conditioning) -> Conditioning {
        Conditioning(context: Tensor(shape: [batch + other.batch] + Array(context.shape.dropFirst()), data: context.data + other.context.data),
                     pooled: Tensor(shape: [batch + other.batch] + Array(pooled.shape.dropFirst()), data: pooled.data + other.pooled.data))
    }
}

public enum GenerationError: Error, CustomStringConvertible {
    case invalidSettings(String)
    case conditioning(path: String, reason: String)
    case cancelled

    public var description: String {
        switch self {
        case let .invalidSettings(m): return m
        case let .conditioning(path, reason): return "conditioning file \(path): \(reason)"
        case .cancelled: return "cancelled"
        }
    }
}

/// SDXL text-to-image on one checkpoint, as diffusers' StableDiffusionXLPipeline computes it: prompt -> CLIP tokenizer
/// -> CLIP-L + bigG -> context + pooled + time ids -> the sampler's steps with classifier-free guidance -> VAE decode.
/// The networks stay resident, so one pipeline renders many prompts (and, patched per style, many styles).
public final class SDXLPipeline: @unchecked Sendable {
    public let checkpoint: DecoderCheckpoint
    public let precision: WeightPrecision
    public let unet: UNet
    public let vae: VAE
    /// nil when the pipeline was built for `--conditioning` files only.
    public let textEncoders: (clipL: CLIPTextEncoder, bigG: CLIPTextEncoder)?
    public let tokenizers: (clipL: CLIPTokenizer, bigG: CLIPTokenizer)
    /// The checkpoint's prediction type (scheduler config, the `v_pred` marker key, or ModelSpec `prediction_type`;
    /// epsilon by default).
    public let prediction: Prediction

    /// Loads the UNet, the VAE and (when `textEncoders`) both text encoders of `checkpoint`. `vae` and
    /// `textEncodersFrom` borrow those components from other files (A1111's "SD VAE", e.g. the fp16-fix VAE;
    /// ComfyUI's separate loaders), so a UNet-only checkpoint renders too.
    public init(checkpoint: DecoderCheckpoint, precision: WeightPrecision = .f32, textEncoders: Bool = true,
                vae vaeFrom: DecoderCheckpoint? = nil, textEncodersFrom: DecoderCheckpoint? = nil) throws {
        self.checkpoint = checkpoint
        self.precision = precision
        unet = try UNet(checkpoint: checkpoint, precision: precision)
        vae = try VAE(checkpoint: vaeFrom ?? checkpoint, precision: precision)
        guard unet.config.admIn != nil, unet.config.addTimeDim != nil else {
            throw DecoderError.config(path: checkpoint.path, reason: "the UNet takes no pooled text and time ids: not an SDXL base UNet (SD1.x and the refiner are not supported by generate)")
        }
        let texts = textEncodersFrom ?? checkpoint
        tokenizers = try Self.tokenizers(texts.path)
        if textEncoders {
            let l = try CLIPTextEncoder(checkpoint: texts, component: .te1, precision: precision)
            let g = try CLIPTextEncoder(checkpoint: texts, component: .te2, precision: precision)
            guard l.config.width + g.config.width == unet.config.contextDim else {
                throw DecoderError.config(path: texts.path, reason: "text encoder widths \(l.config.width) + \(g.config.width) do not make the UNet's context width \(unet.config.contextDim)")
            }
            for (name, te, tok) in [("CLIP-L", l, tokenizers.clipL), ("bigG", g, tokenizers.bigG)] where te.config.vocabulary < tok.vocabularyCount {
                throw DecoderError.config(path: texts.path, reason: "the \(name) text encoder has \(te.config.vocabulary) token embeddings, its tokenizer \(tok.vocabularyCount) ids")
            }
            self.textEncoders = (l, g)
        } else {
            self.textEncoders = nil
        }
        prediction = Self.prediction(checkpoint)
    }

    /// The folder's own tokenizers (`tokenizer/`, `tokenizer_2/`) when it ships them, else CLIP's.
    static func tokenizers(_ path: String) throws -> (clipL: CLIPTokenizer, bigG: CLIPTokenizer) {
        var isDir: ObjCBool = false
        func load(_ sub: String) throws -> CLIPTokenizer {
            let folder = path + "/" + sub
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else { return .shared }
            return try CLIPTokenizer.load(folder: folder)
        }
        return (try load("tokenizer"), try load("tokenizer_2"))
    }

    static func prediction(_ checkpoint: DecoderCheckpoint) -> Prediction {
        let folder = checkpoint.path + "/scheduler/scheduler_config.json"
        if let data = FileManager.default.contents(atPath: folder),
           let json = try? data.withUnsafeBytes({ try JSONParser.parse($0) }),
           let p = json["prediction_type"]?.stringValue, let value = Prediction(rawValue: p) {
            return value
        }
        // The detector reads the `v_pred` marker key (v-prediction fine-tunes ship it), EDM keys and ModelSpec.
        return checkpoint.detection.prediction.type == "v" ? .v : .epsilon
    }

    /// The width of the pooled vector the UNet takes: its added-embedding input less the six time ids (1280 for SDXL).
    public var pooledWidth: Int { (unet.config.admIn ?? 0) - 6 * (unet.config.addTimeDim ?? 0) }

    // MARK: Text

    /// The conditioning of `prompt` for `images` images, and whether the prompt was cut to 75 tokens
    /// (SDXL's encoders take 77 positions with the start and end marks; diffusers truncates the same way).
    public func encode(_ prompt: String, images: Int = 1) throws -> (conditioning: Conditioning, truncated: Bool) {
        guard let (clipL, bigG) = textEncoders else {
            throw DecoderError.config(path: checkpoint.path, reason: "the pipeline was built without text encoders")
        }
        let l = tokenizers.clipL.tokenize(prompt, pad: tokenizers.clipL.endOfTextId)
        let g = tokenizers.bigG.tokenize(prompt, pad: CLIPTokenizer.padBigG)
        let a = try clipL.encode(ids: [l.ids], eosIndex: [l.eos])
        let b = try bigG.encode(ids: [g.ids], eosIndex: [g.eos])
        guard let pooled = b.pooled else {
            throw DecoderError.config(path: checkpoint.path, reason: "the bigG text encoder has no text projection, so no pooled output")
        }
        let c = Conditioning(context: NN.concatChannels(a.penultimate, b.penultimate), pooled: pooled)
        return (c.repeated(images), l.truncated || g.truncated)
    }

    // MARK: Denoising

    /// The latent size of an image: (channels, height / 8, width / 8).
    public func latentShape(width: Int, height: Int) -> [Int] {
        let factor = 1 << (vae.config.blockOutChannels.count - 1)
        return [unet.config.inChannels, height / factor, width / factor]
    }

    /// The denoising of one batch as steps the caller drives: `try denoiser.step()` until `isFinished`, reading
    /// `progress` (and `preview()`) between steps and simply not calling `step()` again to stop. A CLI's progress
    /// bar, Ctrl-C and a server's progress and interrupt endpoints all use this one mechanism. `uncond` is used
    /// when the settings guide (cfg > 1); it may have another number of tokens than `cond` (its own prompt length),
    /// in which case the two go through the UNet as separate passes, as A1111 does.
    public func denoiser(_ settings: GenerationSettings, cond: Conditioning, uncond: Conditioning?) throws -> Denoiser {
        try settings.validate()
        return try Denoiser(pipeline: self, settings: settings, cond: cond, uncond: uncond)
    }

    /// Runs the sampler from the seed's noise to the final latents [B, 4, h, w] (what diffusers'
    /// `output_type="latent"` returns, before the VAE's scaling): `denoiser` driven to the end.
    public func denoise(_ settings: GenerationSettings, cond: Conditioning, uncond: Conditioning?) throws -> Tensor {
        let d = try denoiser(settings, cond: cond, uncond: uncond)
        while !d.isFinished { try d.step() }
        return d.latents
    }

    /// Latents -> images [B, 3, H, W] in [-1, 1] (before clamping); in tiles when `tiling` is given (`VAE.Tiling`).
    public func decode(_ latents: Tensor, tiling: VAE.Tiling? = nil) throws -> Tensor {
        var z = latents
        let s = 1 / vae.scalingFactor
        for i in z.data.indices { z.data[i] *= s }
        return try vae.decode(latents: z, tiling: tiling)
    }

    /// decoded [B, 3, H, W] -> per image RGB bytes (H·W·3, row-major): clamp(x / 2 + 0.5, 0, 1) · 255, rounded half
    /// to even, as diffusers' image processor and PIL conversion give.
    public static func rgbBytes(_ decoded: Tensor) -> [[UInt8]] {
        let (b, c, h, w) = (decoded.shape[0], decoded.shape[1], decoded.shape[2], decoded.shape[3])
        return (0..<b).map { n in
            var out = [UInt8](repeating: 0, count: h * w * 3)
            for y in 0..<h {
                for x in 0..<w {
                    for ch in 0..<3 {
                        let v = decoded.data[((n * c + min(ch, c - 1)) * h + y) * w + x]
                        let unit = min(max(v / 2 + 0.5, 0), 1)
                        out[(y * w + x) * 3 + ch] = UInt8((unit * 255).rounded(.toNearestOrEven))
                    }
                }
            }
            return out
        }
    }
}

/// One batch being denoised (`SDXLPipeline.denoiser`): the sampler's state between steps.
public final class Denoiser {
    public let settings: GenerationSettings
    /// Steps taken and steps in all.
    public private(set) var stepsDone = 0
    public let stepCount: Int
    private let pipeline: SDXLPipeline
    private let plan: SamplingPlan
    private var sampler: Sampler
    private var generator: TorchGenerator
    private let shape: [Int]
    private var x: [Float]
    /// The UNet passes of one step: each a batch of conditioning rows; the guided output is uncond + cfg (cond - uncond).
    private let passes: [Conditioning]
    private let timeIds: [Float]

    init(pipeline: SDXLPipeline, settings: GenerationSettings, cond: Conditioning, uncond: Conditioning?) throws {
        self.pipeline = pipeline
        self.settings = settings
        shape = [cond.batch] + pipeline.latentShape(width: settings.width, height: settings.height)
        plan = try SamplingPlan(sampler: settings.sampler, steps: settings.steps, spacing: settings.spacing, karras: settings.karras)
        stepCount = plan.steps.count
        sampler = Sampler(plan: plan, prediction: settings.prediction ?? pipeline.prediction)
        var generator = TorchGenerator(seed: settings.seed)
        let initialScale = plan.initialScale
        x = generator.randn(shape.reduce(1, *)).map { $0 * initialScale }
        self.generator = generator
        if settings.guided {
            let u = uncond ?? cond.zeros()
            guard u.batch == cond.batch, u.pooled.shape == cond.pooled.shape, u.context.shape.count == 3,
                  u.context.shape[2] == cond.context.shape[2] else {
                throw GenerationError.invalidSettings("negative conditioning \(u.context.shape) / \(u.pooled.shape) does not fit the prompt's \(cond.context.shape) / \(cond.pooled.shape)")
            }
            // Same length: one pass over [uncond; cond] (diffusers). Other lengths: two passes (A1111).
            passes = u.context.shape == cond.context.shape ? [u.stacked(over: cond)] : [u, cond]
        } else {
            passes = [cond]
        }
        // Time ids: original size (h, w), crop top-left (0, 0), target size (h, w), per row.
        timeIds = [Float(settings.height), Float(settings.width), 0, 0, Float(settings.height), Float(settings.width)]
    }

    public var isFinished: Bool { stepsDone == stepCount }

    /// Fraction of the steps done, 0...1.
    public var progress: Double { stepCount == 0 ? 1 : Double(stepsDone) / Double(stepCount) }

    /// The latents now: the final latents once `isFinished` ([B, 4, h, w]).
    public var latents: Tensor {
        let scale = isFinished && plan.finalScale != 1 ? plan.finalScale : 1
        return Tensor(shape: shape, data: scale == 1 ? x : x.map { $0 * scale })
    }

    /// The sampler's current estimate of the clean latents' look, cheap enough for a preview: the latents scaled to
    /// unit variance (decode them with the VAE for an image).
    public func preview() -> Tensor {
        let sigma = stepsDone < stepCount ? plan.steps[stepsDone].sigma : 0
        let s = 1 / (sigma * sigma + 1).squareRoot()
        return Tensor(shape: shape, data: x.map { $0 * s })
    }

    /// One sampler step: the UNet on the current latents (guided), then the sampler's update.
    public func step() throws {
        guard !isFinished else { return }
        let i = stepsDone
        let scale = plan.inputScale(i)
        let sample = Tensor(shape: shape, data: x.map { $0 * scale })
        let guidance = try prediction(sample, timestep: plan.steps[i].timestep)
        sampler.step(i, x: &x, output: guidance.data, generator: &generator)
        stepsDone += 1
    }

    /// The model's guided output for a UNet input `sample` [B, 4, h, w] at `timestep`: with guidance
    /// uncond + cfg (cond - uncond), where cond and uncond run as one batch when their lengths agree and as two
    /// passes otherwise (equal results); without guidance the prompt's output.
    public func prediction(_ sample: Tensor, timestep: Float) throws -> Tensor {
        let count = sample.count
        var outputs: [Float] = []
        outputs.reserveCapacity(count * 2)
        for pass in passes {
            let rows = pass.batch
            var input = sample.data
            for _ in 1..<max(rows / shape[0], 1) { input += sample.data }
            let ids = Tensor(shape: [rows, timeIds.count], data: Array([[Float]](repeating: timeIds, count: rows).joined()))
            let out = try pipeline.unet(Tensor(shape: [rows] + Array(shape.dropFirst()), data: input), timesteps: [timestep],
                                        context: pass.context, pooled: pass.pooled, timeIds: ids)
            outputs += out.data
        }
        guard settings.guided else { return Tensor(shape: shape, data: outputs) }
        let cfg = settings.cfg
        return Tensor(shape: shape, data: (0..<count).map { j in outputs[j] + cfg * (outputs[count + j] - outputs[j]) })
    }
}
