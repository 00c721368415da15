import Foundation
import MumuFormats
import MumuEncoder
import MumuSampler
import MumuStyles
import MumuTensor

/// `--style NAME[:STRENGTH]`.
public struct StyleChoice: Equatable, Sendable {
    public var name: String
    public var strength: Float?

    public init(name: String, strength: Float? = nil) {
        self.name = name
        self.strength = strength
    }

    public static func parse(_ text: String) throws -> StyleChoice {
        guard let colon = text.lastIndex(of: ":") else { return StyleChoice(name: text) }
        let name = String(text[..<colon]), value = String(text[text.index(after: colon)...])
        guard !name.isEmpty, let s = Float(value), s.isFinite else {
            throw GenerationError.invalidSettings("style '\(text)': expected NAME or NAME:STRENGTH (a number, e.g. anime:0.8)")
        }
        return StyleChoice(name: name, strength: s)
    }

    public var label: String { strength.map { "\(name):\(InfoText.formatFloat($0))" } ?? name }
}

/// Everything `mumu generate` is asked for.
public struct GenerateRequest: Sendable {
    public var settings: GenerationSettings
    /// The resident base: a checkpoint file or folder, or a registered full style (nil: from the styles).
    public var checkpoint: String?
    /// Rendered in turn, same prompt and seed; empty: the base alone.
    public var styles: [StyleChoice] = []
    /// A safetensors file with `context` [B, T, 2048] and `pooled` [B, 1280] (and optionally `negative_context`,
    /// `negative_pooled`) used instead of the text encoders.
    public var conditioning: String?
    /// The PNG to write; with several images or styles, the stem of their names. nil: numbered names in
    /// `outputFolder`, as A1111 writes them (`00012-42.png`: counter, seed), never overwriting.
    public var output: String?
    /// Where numbered outputs go (created when missing).
    public var outputFolder = "outputs"
    /// Also write `<stem>-grid.png`, a captioned contact sheet of every image.
    public var grid = false
    public var overwrite = false
    /// An Idefics2 folder (with tokenizer.json): the prompt and negative prompt, `<image:PATH>` inside them, are
    /// encoded by MUMU's encoder and the checkpoint's connector instead of the CLIP text encoders.
    public var encoder: String?
    /// A LoRA for the encoder's LM and projector (`EncoderLora`), kept unmerged; only with `encoder`.
    public var encoderLora: String?
    /// The longer edge of prompt images (a multiple of 14); nil: the encoder folder's `mumu_image_size`, else 448.
    public var imageSize: Int?
    /// The working directory `<image:PATH>` paths are relative to.
    public var workingDirectory = FileManager.default.currentDirectoryPath
    /// A VAE to decode with instead of the checkpoint's (a file or folder; A1111's "SD VAE").
    public var vae: String?
    /// Decode in tiles (`--vae-tile`; diffusers' tiled decode), recorded in the infotext; nil: whole.
    public var vaeTiling: VAE.Tiling?
    /// A checkpoint whose CLIP-L and bigG replace (or supply) the checkpoint's text encoders.
    public var textEncoders: String?
    public var precision: WeightPrecision = .f32
    /// MUMU's encoder's weights (`encoder`); nil: `precision`. The CLI's defaults differ: bf16 for the encoder
    /// wherever the CPU has a bf16 path (its size is what matters), the faster one for generation.
    public var encoderPrecision: WeightPrecision?
    public var registryHome: String?
    public var version = "mumu"

    public init(settings: GenerationSettings, output: String?) {
        self.settings = settings
        self.output = output
    }
}

/// What a running job reports, one event per `GenerateRun.next()`.
public enum GenerateEvent: Sendable {
    /// About to load the base (the next call loads it).
    case loading(String)
    case note(String)
    /// A render (a style, or "base") begins: its prompt is encoded and its denoising set up.
    case render(String)
    /// A sampler step of the current render finished.
    case step(render: String, step: Int, total: Int)
    case wrote(String)
}

/// One image written.
public struct GeneratedImage: Sendable {
    public var path: String
    public var style: String?
    public var index: Int
    public var infotext: String
}

public struct GenerateReport: Sendable {
    public var images: [GeneratedImage] = []
    public var grid: String?
    public var checkpoint = ""
    public var notes: [String] = []
    public var loadSeconds = 0.0
    /// Per render: text encoding, denoising and VAE seconds.
    public var timings: [(render: String, encode: Double, denoise: Double, decode: Double)] = []
}

extension GenerateReport {
    /// The settings, outputs with their infotext, notes and timings (`mumu generate --json`), keys sorted.
    public func json(_ job: GenerateJob) -> JSONValue {
        let r = job.request, s = job.settings
        func optional(_ v: String?) -> JSONValue { v.map(JSONValue.string) ?? .null }
        let fields: [(String, JSONValue)] = [
            ("prompt", .string(s.prompt)), ("negative_prompt", .string(s.negativePrompt)), ("width", .int(s.width)),
            ("height", .int(s.height)), ("steps", .int(s.steps)), ("cfg", .double(Double(s.cfg))), ("seed", .int(Int(s.seed))),
            ("sampler", .string(s.sampler.rawValue)), ("spacing", .string(s.spacing.rawValue)), ("karras", .bool(s.karras)),
            ("images_per_prompt", .int(s.images)), ("precision", .string(r.precision.rawValue)), ("checkpoint", .string(checkpoint)),
            // The GEMM path the weights ran on: "bf16" names a 16-bit precision whose layout is the CPU's (scaled
            // f16 on the avx512fp16 path); f32 weights multiply with OpenBLAS's sgemm.
            ("gemm_path", .string(r.precision == .bf16 ? BF16Matrix.isa : "sgemm")),
            ("styles", .array(r.styles.map { .string($0.label) })),
            ("outputs", .array(images.map { .object([("index", .int($0.index)), ("infotext", .string($0.infotext)),
                                                      ("path", .string($0.path)), ("style", optional($0.style))]) })),
            ("grid", optional(grid)), ("notes", .array(notes.map(JSONValue.string))), ("load_seconds", .double(loadSeconds)),
            ("timings", .array(timings.map { .object([("decode_seconds", .double($0.decode)), ("denoise_seconds", .double($0.denoise)),
                                                        ("encode_seconds", .double($0.encode)), ("render", .string($0.render))]) })),
            ("encoder", optional(r.encoder)), ("encoder_lora", optional(r.encoderLora)),
            ("encoder_precision", r.encoder == nil ? .null : .string((r.encoderPrecision ?? r.precision).rawValue)),
            ("vae_tile", r.vaeTiling.map { .object([("overlap", .int($0.overlap)), ("tile", .int($0.tile))]) } ?? .null),
        ]
        return .object(fields.sorted { $0.0 < $1.0 })
    }
}

/// `mumu generate` as a library call: checks everything it can before loading a model (settings, styles with
/// suggestions, output paths, the conditioning file), loads the base once, then renders the prompt once per style,
/// writing PNGs with A1111 infotext as it goes (each file atomically; a stop leaves only whole files).
public final class GenerateJob {
    public let request: GenerateRequest
    /// The request's settings, checked, with the image count a conditioning file sets.
    public let settings: GenerationSettings
    public let outputs: [String]
    public let gridPath: String?
    let registry: StyleRegistry?
    /// With `--encoder`: the parsed prompts, their prepared images and the image size.
    let multimodal: MultimodalPrompts?
    let base: (path: String, name: String, sha256: String?)
    /// What the checks decided that the user should hear (which of a style and a file of one name was taken).
    public let checkNotes: [String]
    let manifests: [StyleManifest]
    let cache: HashCache

    public init(_ request: GenerateRequest, cache: HashCache = .shared) throws {
        self.request = request
        self.cache = cache
        var settings = request.settings
        if let c = request.conditioning {
            let batch = try ConditioningFile.peekBatch(c)
            if settings.images != 1 && settings.images != batch {
                throw GenerationError.conditioning(path: c, reason: "it holds \(batch) conditioning rows; \(settings.images) images per prompt do not match (leave the image count at 1)")
            }
            settings.images = batch
        }
        try settings.validate()
        self.settings = settings

        // The registry is read when styles are asked for, or when the checkpoint is a bare name (a style, maybe).
        registry = request.styles.isEmpty && (request.checkpoint?.contains("/") ?? false)
            ? nil : try StyleRegistry(home: request.registryHome, create: false)
        let registry = self.registry
        manifests = try request.styles.map { try registry!.manifest($0.name) }
        let labels = request.styles.map(\.label)
        if let dup = labels.first(where: { n in labels.filter { $0 == n }.count > 1 }) {
            throw GenerationError.invalidSettings("style \(dup) is asked for twice")
        }
        final class Notes: @unchecked Sendable { var list: [String] = [] }
        let notes = Notes()
        base = try Self.resolveBase(request.checkpoint, manifests: manifests, registry: registry, cache: cache) { notes.list.append($0) }
        checkNotes = notes.list
        for (what, path) in [("VAE", request.vae), ("text encoders", request.textEncoders), ("encoder", request.encoder),
                             ("encoder LoRA", request.encoderLora)] {
            if let path, !fileExists(path) { throw GenerationError.invalidSettings("\(what) \(path): no such file or folder") }
        }
        // Multimodal prompts: parsed, their images read and sized, and the connector looked for, before any model.
        let prompt = try MultimodalPrompt(parsing: settings.prompt, workingDirectory: request.workingDirectory)
        let negative = try MultimodalPrompt(parsing: settings.negativePrompt, workingDirectory: request.workingDirectory)
        if let folder = request.encoder {
            guard request.conditioning == nil else {
                throw GenerationError.invalidSettings("give MUMU's encoder or a conditioning file, not both")
            }
            multimodal = try MultimodalPrompts(prompt: prompt, negative: negative, encoder: folder, imageSize: request.imageSize,
                                               lora: request.encoderLora)
            try MultimodalPrompts.requireConnector(base.path, name: base.name)
        } else if request.encoderLora != nil {
            throw GenerationError.invalidSettings("an encoder LoRA needs MUMU's encoder (an Idefics2 folder) to go on")
        } else if request.encoderPrecision != nil {
            throw GenerationError.invalidSettings("an encoder precision needs MUMU's encoder (an Idefics2 folder)")
        } else if prompt.hasImages || negative.hasImages {
            throw GenerationError.invalidSettings("the prompt has <image:...> inside: it needs MUMU's encoder (an Idefics2 folder) and a mumu-decoder checkpoint")
        } else {
            multimodal = nil
        }

        // A style given at several strengths gets the strength in its file names.
        let renders = request.styles.isEmpty ? [nil] : request.styles.map { c in
            Optional(request.styles.filter { $0.name == c.name }.count > 1 ? c.label.replacingOccurrences(of: ":", with: "-") : c.name)
        }
        let n = settings.images
        var outs: [String] = []
        if let output = request.output {
            // The path itself for one image, else <stem>-<style>[-<i>].png.
            let url = URL(fileURLWithPath: output)
            guard url.pathExtension.isEmpty || url.pathExtension.lowercased() == "png" else {
                throw GenerationError.invalidSettings("\(output): mumu writes PNG images (with the infotext in a text chunk); name the output .png")
            }
            let stem = url.pathExtension.isEmpty ? output : url.deletingPathExtension().path
            for r in renders {
                for i in 0..<n {
                    if renders.count == 1 && n == 1 { outs.append(url.pathExtension.isEmpty ? output + ".png" : output); continue }
                    outs.append(stem + "-" + (r ?? "base") + (n > 1 ? "-\(i)" : "") + ".png")
                }
            }
            gridPath = request.grid ? stem + "-grid.png" : nil
        } else {
            // A1111's numbering: the next free counter in the folder, one per image, then the seed (and the style).
            let folder = request.outputFolder
            if !fileExists(folder) {
                do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
                    throw GenerationError.invalidSettings("cannot create the output folder \(folder): \(error.localizedDescription)")
                }
            }
            var counter = Self.nextCounter(in: folder)
            for r in renders {
                for i in 0..<n {
                    let style = r.map { "-" + $0 } ?? ""
                    outs.append(folder + "/" + String(format: "%05d", counter) + "-\(settings.seed)\(style)" + (n > 1 ? "-\(i)" : "") + ".png")
                    counter += 1
                }
            }
            gridPath = request.grid ? folder + "/grid-" + String(format: "%05d", counter) + "-\(settings.seed).png" : nil
        }
        outputs = outs
        for path in outs + (gridPath.map { [$0] } ?? []) {
            try OutputPath.check(path, overwrite: request.overwrite)
        }
    }

    /// One more than the largest leading counter of a file name in `folder` (A1111's `00012-...png`), 0 when none.
    static func nextCounter(in folder: String) -> Int {
        let counters = listDirectory(folder).compactMap { name -> Int? in
            let digits = name.prefix { $0.isASCII && $0.isNumber }
            return digits.count >= 1 && name.dropFirst(digits.count).first == "-" ? Int(digits) : nil
        }
        return (counters.max() ?? -1) + 1
    }

    /// The base: `--checkpoint` (file, folder or full style), else the first style's own weights (full) or base.
    static func resolveBase(_ spec: String?, manifests: [StyleManifest], registry: StyleRegistry?, cache: HashCache,
                            note: @escaping (String) -> Void) throws -> (path: String, name: String, sha256: String?)
    {
        var isDir: ObjCBool = false
        if let spec {
            // A bare name that is a registered full style is the style, even when a file or folder of that name is
            // here (the registry says which it took); a path, or a name no style has, is the file or folder.
            if !spec.contains("/"), let registry, let r = try? registry.resolveBaseChoice(spec, cache: cache, note: note), !r.isFile {
                return (r.path, r.name, r.sha256)
            }
            if FileManager.default.fileExists(atPath: spec, isDirectory: &isDir) {
                let name = URL(fileURLWithPath: spec).deletingPathExtension().lastPathComponent
                return (spec, name, isDir.boolValue ? nil : try cache.hashes(of: spec).sha256)
            }
            throw GenerationError.invalidSettings("checkpoint \(spec): no such file or folder, nor a registered full style")
        }
        guard let first = manifests.first, let registry else {
            throw GenerationError.invalidSettings("give a checkpoint or a style")
        }
        if first.kind == .full { return try registry.resolveBase(first.name, cache: cache) }
        if first.base != nil {
            // A registered full style with the base's hash, else the base file recorded when the style was added
            // (checked by hash; the error says when it moved or changed).
            let b = try registry.baseFile(of: first, given: nil, cache: cache, notes: note)
            return (b.path, b.name, b.sha256)
        }
        throw GenerationError.invalidSettings("style '\(first.name)' records no base: give the checkpoint")
    }

    /// The job as steps its caller drives (`GenerateRun.next()`); nothing is loaded until the first steps.
    public func start() -> GenerateRun { GenerateRun(job: self) }

    /// Drives the job to the end, stopping (with `GenerationError.cancelled`) before a step when `Interrupt` has
    /// been requested. For callers that want no events; tests use it.
    @discardableResult
    public func run() throws -> GenerateReport {
        let run = start()
        while try run.next() != nil {
            if Interrupt.requested != nil { run.stop(); throw GenerationError.cancelled }
        }
        return run.report
    }

    /// A1111's "Schedule type" for the spacing chosen.
    static func scheduleType(_ s: GenerationSettings) -> String {
        if s.karras { return "Karras" }
        switch s.spacing {
        case .trailing: return "SGM Uniform"
        case .leading, .linspace: return "Automatic"
        }
    }
}

/// `--conditioning FILE`: SDXL conditioning computed elsewhere (e.g. by a MUMU encoder). A safetensors file with
/// `context` [B, T, 2048] and `pooled` [B, 1280] (f32, f16 or bf16), optionally `negative_context` and
/// `negative_pooled` (the same batch and widths; the negative's token count may differ) (without them the unconditional input is zeros, as diffusers SDXL
/// gives an empty negative prompt). docs/generating.md.
public enum ConditioningFile {
    /// The batch size, read from the header alone (checks the keys and ranks).
    public static func peekBatch(_ path: String) throws -> Int {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path) } catch {
            throw GenerationError.conditioning(path: path, reason: "not a readable safetensors file (\(error))")
        }
        let infos = file.infoByName
        guard let c = infos["context"], let p = infos["pooled"] else {
            throw GenerationError.conditioning(path: path, reason: "needs tensors `context` [B, T, 2048] and `pooled` [B, 1280]; it holds: \(infos.keys.sorted().prefix(8).joined(separator: ", "))")
        }
        guard c.shape.count == 3, p.shape.count == 2, c.shape[0] == p.shape[0], c.shape[0] >= 1, c.shape[1] >= 1 else {
            throw GenerationError.conditioning(path: path, reason: "context \(c.shape) and pooled \(p.shape): expected [B, T, C] and [B, P] with the same B >= 1")
        }
        return c.shape[0]
    }

    /// Loads and checks the tensors against the UNet's widths.
    public static func load(_ path: String, contextDim: Int, pooledDim: Int) throws -> (cond: Conditioning, uncond: Conditioning?) {
        _ = try peekBatch(path)
        let file = try SafetensorsFile(path: path)
        func tensor(_ name: String) throws -> Tensor? {
            guard let info = file.infoByName[name] else { return nil }
            guard [.f32, .f16, .bf16].contains(info.dtype) else {
                throw GenerationError.conditioning(path: path, reason: "\(name) is \(info.dtype.rawValue); use F32, F16 or BF16")
            }
            let values = try file.tensor(name).floats()
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw GenerationError.conditioning(path: path, reason: "\(name) holds a non-finite value at element \(bad)")
            }
            return Tensor(shape: info.shape, data: values)
        }
        let context = try tensor("context")!, pooled = try tensor("pooled")!
        guard context.shape[2] == contextDim, pooled.shape[1] == pooledDim else {
            throw GenerationError.conditioning(path: path, reason: "context \(context.shape) / pooled \(pooled.shape): this UNet takes [B, T, \(contextDim)] and [B, \(pooledDim)]")
        }
        let cond = Conditioning(context: context, pooled: pooled)
        let nc = try tensor("negative_context"), np = try tensor("negative_pooled")
        guard (nc == nil) == (np == nil) else {
            throw GenerationError.conditioning(path: path, reason: "negative_context and negative_pooled come together")
        }
        guard let nc, let np else { return (cond, nil) }
        // The negative may have its own number of tokens (a MUMU negative prompt at its own length): the UNet then
        // takes cond and uncond as two passes. Batch and widths must agree.
        guard nc.shape.count == 3, nc.shape[0] == context.shape[0], nc.shape[2] == context.shape[2], nc.shape[1] >= 1,
              np.shape == pooled.shape else {
            throw GenerationError.conditioning(path: path, reason: "negative_context \(nc.shape) / negative_pooled \(np.shape) must match context \(context.shape) / pooled \(pooled.shape) in batch and width (the token count may differ)")
        }
        return (cond, Conditioning(context: nc, pooled: np))
    }
}

/// One run of a `GenerateJob`, as steps: each `next()` does one unit of work (announce, load, set up a render, one
/// sampler step, decode and write) and returns what happened, or nil when everything is written. The caller owns
/// the loop, so a progress bar, Ctrl-C (stop calling `next()`, then `stop()`) and a server's progress and
/// interrupt endpoints use this one mechanism.
public final class GenerateRun {
    public let job: GenerateJob
    public private(set) var report = GenerateReport()

    private enum Phase {
        case announce, load, render(Int), finish, done
    }
    private var phase = Phase.announce
    private var pending: [GenerateEvent] = []
    private var styled: StyledPipeline?
    private var fileCond: (cond: Conditioning, uncond: Conditioning?)?
    private var textCond: (cond: Conditioning, uncond: Conditioning?)?
    private var textUnderStyle = false
    private var tiles: [(image: RGBImage, caption: String)] = []
    private var outputIndex = 0
    /// Infotext fields of a borrowed VAE.
    private var vaeInfo: [(String, String)] = []
    /// The render under way: its denoiser and what its infotext will say.
    private var current: (label: String, denoiser: Denoiser, started: Date, encode: Double, info: RenderInfo)?

    private struct RenderInfo {
        var model: String
        var modelHash: String?
        var loras: [(String, String)] = []
        var extra: [(String, String)] = []
        var strength: Float?
        var choice: StyleChoice?
    }

    init(job: GenerateJob) { self.job = job }

    private var renders: [(choice: StyleChoice, manifest: StyleManifest)?] {
        job.request.styles.isEmpty ? [nil] : zip(job.request.styles, job.manifests).map { ($0, $1) }
    }

    /// Does the next unit of work; nil when the job is done.
    public func next() throws -> GenerateEvent? {
        while pending.isEmpty {
            switch phase {
            case .announce:
                report.checkpoint = job.base.path
                for n in job.checkNotes { note(n) }
                pending.append(.loading(job.base.path))
                phase = .load
            case .load:
                try load()
                phase = .render(0)
            case let .render(i):
                if current == nil {
                    guard i < renders.count else { phase = .finish; continue }
                    try begin(renders[i])
                } else if let c = current, !c.denoiser.isFinished {
                    try c.denoiser.step()
                    pending.append(.step(render: c.label, step: c.denoiser.stepsDone, total: c.denoiser.stepCount))
                } else {
                    try finishRender()
                    phase = .render(i + 1)
                }
            case .finish:
                try writeGrid()
                phase = .done
            case .done:
                return nil
            }
        }
        return pending.removeFirst()
    }

    /// Stops the run where it is: the current style is taken off; nothing more is written.
    public func stop() {
        try? styled?.restore()
        current = nil
        phase = .done
        pending = []
    }

    private func load() throws {
        let start = Date()
        let request = job.request
        // MUMU's encoder first, freed before the decoder loads (Idefics2-8b in bf16 is 16 GB).
        var hidden: (cond: Tensor, uncond: Tensor?)?
        if let m = job.multimodal {
            let (c, u) = try m.encode(precision: request.encoderPrecision ?? request.precision, negative: job.settings.guided)
            hidden = (c.hidden, u?.hidden)
            note("encoded the prompt with \(URL(fileURLWithPath: m.encoder).lastPathComponent): \(c.tokens) tokens (\(c.imageTokens) from \(c.images.count) images)"
                 + (u.map { ", negative \($0.tokens) tokens" } ?? ""))
        }
        let checkpoint = try DecoderCheckpoint(path: job.base.path)
        let vae = try request.vae.map { try DecoderCheckpoint(path: $0) }
        let texts = try request.textEncoders.map { try DecoderCheckpoint(path: $0) }
        let styled = try StyledPipeline(checkpoint: checkpoint, precision: request.precision, textEncoders: request.conditioning == nil && request.encoder == nil,
                                        vae: vae, textEncodersFrom: texts)
        if let v = request.vae {
            // A1111 records the VAE it decoded with (name and AutoV2 hash).
            vaeInfo = [("VAE hash", isDirectory(v) ? nil : (try job.cache.hashes(of: v).autoV2)), ("VAE", URL(fileURLWithPath: v).lastPathComponent)]
                .compactMap { k, v in v.map { (k, $0) } }
        }
        self.styled = styled
        let detected = checkpoint.detection.prediction
        if detected.zeroTerminalSNR || detected.edm {
            note("\(job.base.name) marks \(detected.edm ? "an EDM v-prediction" : "a zero-terminal-SNR") schedule, which mumu does not implement; it is rendered with SDXL's standard schedule")
        }
        if let c = request.conditioning {
            fileCond = try ConditioningFile.load(c, contextDim: styled.pipeline.unet.config.contextDim, pooledDim: styled.pipeline.pooledWidth)
        }
        if let hidden {
            let connector = try MumuConnector(checkpoint: checkpoint, precision: request.precision)
            let n = job.settings.images
            fileCond = (try connector.conditioning(hidden.cond).repeated(n), try hidden.uncond.map { try connector.conditioning($0).repeated(n) })
        }
        report.loadSeconds = Date().timeIntervalSince(start)
    }

    private func note(_ text: String) {
        report.notes.append(text)
        pending.append(.note(text))
    }

    /// Puts the render's style on, encodes the prompt (again only when a style changes the text encoders) and sets
    /// up its denoiser.
    private func begin(_ render: (choice: StyleChoice, manifest: StyleManifest)?) throws {
        guard let styled else { return }
        let s = job.settings, request = job.request
        let label = render?.choice.label ?? "base"
        pending.append(.render(label))
        var info = RenderInfo(model: job.base.name, modelHash: job.base.sha256.map { String($0.prefix(10)) }, choice: render?.choice)
        if let render {
            let (choice, manifest) = (render.choice, render.manifest)
            let isBase = manifest.kind == .full && manifest.blob("weights")?.sha256 == job.base.sha256
            if !isBase {
                let plugin = try job.registry!.plugin(manifest.name, baseSHA256: job.base.sha256, cache: job.cache)
                let applied = try styled.apply(plugin, strength: choice.strength)
                guard applied.changed > 0 else {
                    throw GenerationError.invalidSettings("style '\(manifest.name)' changes nothing in \(job.base.name) (is it for another architecture?)")
                }
                info.strength = applied.strength
                if let trained = manifest.base, trained.sha256 != job.base.sha256 {
                    // A LoRA on another checkpoint of its architecture, as A1111 and ComfyUI allow: say so.
                    info.extra.append(("Style base", trained.name))
                    note("style \(manifest.name) was made on \(trained.name); applied to \(job.base.name)")
                }
                pending.append(.note("style \(manifest.name): \(applied.mode.rawValue), \(applied.changed) \(applied.mode == .lowRank ? "layers" : "tensors"), strength \(InfoText.formatFloat(applied.strength))"))
            } else {
                info.strength = 1
            }
            switch manifest.kind {
            case .lora:
                if let blob = manifest.blob("lora") {
                    let path = blob.reference ?? job.registry!.blobPath(blob.sha256)
                    info.loras.append((manifest.name, (try job.cache.hashes(of: path).autoV3) ?? String(blob.sha256.prefix(12))))
                }
            case .full:
                info.model = manifest.name
                info.modelHash = manifest.blob("weights").map { String($0.sha256.prefix(10)) }
            case .delta, .recipe:
                info.model = manifest.name
                info.modelHash = manifest.kind == .delta ? manifest.sources.first?.sha256.map { String($0.prefix(10)) } : nil
            }
            info.extra.append(("Style", manifest.name))
            if let strength = info.strength, manifest.kind != .full || strength != 1 { info.extra.append(("Style strength", InfoText.formatFloat(strength))) }
        }

        let t0 = Date()
        let pipe = styled.pipeline
        let cond: (cond: Conditioning, uncond: Conditioning?)
        if let fileCond {
            cond = fileCond
        } else {
            let touches = styled.current?.touchesText ?? false
            if textCond == nil || touches || textUnderStyle {
                let (c, truncated) = try pipe.encode(s.prompt, images: s.images)
                if truncated && textCond == nil {
                    note("the prompt is longer than 75 tokens (CLIP's 77 with start and end); it was truncated to its first 75, as diffusers does")
                }
                let u = s.negativePrompt.isEmpty || !s.guided ? nil : try pipe.encode(s.negativePrompt, images: s.images).conditioning
                textCond = (c, u)
                textUnderStyle = touches
            }
            cond = textCond!
        }
        let encode = Date().timeIntervalSince(t0)
        info.extra += vaeInfo
        if let m = job.multimodal {
            // Each prompt image as written, with its file's SHA-256 (12 hex), so the prompt is reproducible.
            if let hashes = m.imageHashesText { info.extra.append(("Image hashes", hashes)) }
            info.extra.append(("Encoder", URL(fileURLWithPath: m.encoder).lastPathComponent))
            if let lora = m.loraText { info.extra.append(("Encoder LoRA", lora)) }
        }
        if let c = request.conditioning { info.extra.append(("Conditioning", (c as NSString).lastPathComponent)) }
        if let t = request.vaeTiling { info.extra += [("VAE tile", String(t.tile)), ("VAE tile overlap", String(t.overlap))] }
        if s.spacing != .leading { info.extra.append(("Spacing", s.spacing.rawValue)) }
        let prediction = s.prediction ?? pipe.prediction
        if prediction == .v { info.extra.append(("Prediction", prediction.rawValue)) }
        current = (label, try pipe.denoiser(s, cond: cond.cond, uncond: cond.uncond), Date(), encode, info)
    }

    /// Decodes the finished render, writes its PNGs with their infotext, takes its style off.
    private func finishRender() throws {
        guard let styled, let c = current else { return }
        let s = job.settings, request = job.request
        let t2 = Date()
        let decoded = try styled.pipeline.decode(c.denoiser.latents, tiling: request.vaeTiling)
        let bytes = SDXLPipeline.rgbBytes(decoded)
        report.timings.append((c.label, c.encode, t2.timeIntervalSince(c.started), Date().timeIntervalSince(t2)))
        let info = c.info
        for (i, pixels) in bytes.enumerated() {
            var more = info.extra
            if bytes.count > 1 { more += [("Batch size", String(bytes.count)), ("Batch pos", String(i))] }
            let params = InfoText.a1111Parameters(
                steps: s.steps, sampler: s.sampler.a1111Name, scheduleType: GenerateJob.scheduleType(s), cfgScale: s.cfg,
                seed: s.seed, width: s.width, height: s.height, modelHash: info.modelHash, model: info.model, loraHashes: info.loras,
                extra: more, version: request.version)
            let prompted = fileCond == nil || job.multimodal != nil
            let text = InfoText(prompt: prompted ? s.prompt : "", negativePrompt: prompted ? s.negativePrompt : "", parameters: params).render()
            let image = RGBImage(width: s.width, height: s.height, pixels: pixels)
            let path = job.outputs[outputIndex]
            outputIndex += 1
            try PNG.write(image, text: [(key: InfoText.pngKey, value: text)], to: path, overwrite: request.overwrite)
            report.images.append(GeneratedImage(path: path, style: info.choice?.name, index: i, infotext: text))
            pending.append(.wrote(path))
            var caption = info.choice.map { $0.name + (info.strength.map { $0 == 1 ? "" : " \(InfoText.formatFloat($0))" } ?? "") } ?? job.base.name
            if bytes.count > 1 { caption += " #\(i)" }
            tiles.append((image, caption))
        }
        try styled.restore()
        current = nil
    }

    private func writeGrid() throws {
        guard let gridPath = job.gridPath else { return }
        let sheet = try ContactSheet.make(tiles)
        let info = "mumu contact sheet: " + tiles.map(\.caption).joined(separator: ", ")
        try PNG.write(sheet, text: [(key: "Description", value: info)], to: gridPath, overwrite: job.request.overwrite)
        report.grid = gridPath
        pending.append(.wrote(gridPath))
    }
}
