import ArgumentParser
import Foundation
import MumuFormats
import MumuGenerate
import MumuSampler
import MumuStyles
import MumuTensor

extension SamplerKind: ExpressibleByArgument {}
extension NoiseSchedule.Spacing: ExpressibleByArgument {}
extension Prediction: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "epsilon", "eps": self = .epsilon
        case "v", "v_prediction", "v-prediction": self = .v
        default: return nil
        }
    }
}

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate images with SDXL (a checkpoint, or styles from the registry) and write PNGs A1111 and Civitai read.",
        discussion: """
        Examples:
          mumu generate "a watercolor fox" --checkpoint sd_xl_base_1.0.safetensors -o fox.png
          mumu generate "a watercolor fox" --style anime --style photo:0.7 --grid -o fox.png --seed 42
          mumu generate --conditioning mumu-prompt.safetensors --checkpoint decoder.safetensors -o out.png
        Seeds draw the latents as diffusers does on the CPU (torch.Generator("cpu").manual_seed(seed)), so the same
        settings reproduce a diffusers image. docs/generating.md.
        """)

    @Argument(help: "The prompt (not needed with --conditioning).") var prompt: String?
    @Option(name: [.customShort("n"), .long], help: "Negative prompt (empty: zero embeddings, as diffusers SDXL).") var negative = ""
    @Option(help: "A checkpoint file or diffusers folder, or a registered full style (default: the styles' base).") var checkpoint: String?
    @Option(help: "MUMU's encoder: an Idefics2 folder. The prompt may then hold <image:PATH>; the checkpoint must have a connector.") var encoder: String?
    @Option(parsing: .unconditional, help: "With --encoder: longer edge of each prompt image, a multiple of 14 (default: the folder's mumu_image_size, else 448).") var imageSize: Int?
    @Option(help: "With --encoder: the encoder's precision, f32 or bf16 (Idefics2-8b needs bf16 on a 24 GB machine). Default: bf16 where the CPU has a bf16 hardware path (AVX2 and up), else f32.") var encoderPrecision: WeightPrecision?
    @Option(help: "With --encoder: a LoRA for the encoder's LM and projector (PEFT's adapter_model.safetensors, adapter_config.json beside it, or kohya names), kept unmerged.") var encoderLora: String?
    @Option(help: "Decode with this VAE instead of the checkpoint's (e.g. the fp16-fix VAE; A1111's SD VAE).") var vae: String?
    @Option(parsing: .unconditional, help: "Decode in tiles of this many pixels (a multiple of 8; diffusers' tiled decode): the VAE decoder's memory is then one tile's, not the whole image's.") var vaeTile: Int?
    @Option(parsing: .unconditional, help: "With --vae-tile: pixels each tile overlaps and blends with the last (a multiple of 8; default a quarter of the tile, as diffusers).") var vaeTileOverlap: Int?
    @Option(help: "Take CLIP-L and bigG from this checkpoint (a UNet-only checkpoint needs them, or --conditioning).") var textEncoders: String?
    @Option(name: .long, help: "NAME[:STRENGTH] from the registry; repeat to render the same prompt and seed once per style.") var style: [String] = []
    // Numbers are parsed unconditionally, so `--seed -1` and `--cfg -3` reach the checks instead of "Missing value".
    @Option(parsing: .unconditional, help: "Width in pixels (a multiple of 8).") var width = 1024
    @Option(parsing: .unconditional, help: "Height in pixels (a multiple of 8).") var height = 1024
    @Option(parsing: .unconditional, help: "Sampling steps.") var steps = 25
    @Option(parsing: .unconditional, help: "Classifier-free guidance scale (1: no guidance, as Turbo/Lightning styles want).") var cfg: Float = 7
    @Option(parsing: .unconditional, help: "Seed (default or -1: random, as A1111; the seed used is printed and stored in the PNG).") var seed: Int64?
    @Option(help: "euler, euler_a, dpmpp_2m or ddim.") var sampler: SamplerKind = .euler
    @Option(help: "Timestep spacing: leading (SDXL's default), trailing (few-step styles) or linspace.") var spacing: NoiseSchedule.Spacing = .leading
    @Flag(help: "Karras sigmas (euler, euler_a, dpmpp_2m).") var karras = false
    @Option(help: "epsilon or v_prediction (default: the checkpoint's scheduler config or ModelSpec, else epsilon).") var prediction: Prediction?
    @Option(parsing: .unconditional, help: "Images per prompt (one batch, one seed).") var images = 1
    @Option(help: "f32, or bf16 (half the memory; faster than f32 with AMX or AVX-512 BF16, 1.07-1.10x f32's time with AVX2 alone). Default: the faster one on this CPU (bf16 with AMX or AVX-512 BF16, else f32).") var precision: WeightPrecision = .generationDefault
    @Option(help: "A safetensors file with `context` [B, T, 2048] and `pooled` [B, 1280] to use instead of the text encoders.") var conditioning: String?
    @Option(name: [.customShort("o"), .long], help: "Output PNG (with several images or styles: the stem of their names). Default: numbered names in --output-dir, never overwriting.") var output: String?
    @Option(help: "Folder for numbered outputs (00012-SEED.png, as A1111) when -o is not given.") var outputDir = "outputs"
    @Flag(help: "Also write <output>-grid.png: every image on one captioned contact sheet.") var grid = false
    @Flag(help: "Overwrite existing outputs.") var force = false
    @Flag(help: "Print the settings, outputs and timings as JSON.") var json = false
    @Flag(help: "No progress bar.") var quiet = false
    @OptionGroup var registry: RegistryOptions

    func run() throws {
        try runReportingErrors {
            guard prompt != nil || conditioning != nil else { throw ValidationError("give a prompt, or --conditioning FILE") }
            if vaeTileOverlap != nil && vaeTile == nil { throw ValidationError("--vae-tile-overlap needs --vae-tile") }
            if prompt != nil && conditioning != nil { warn("--conditioning replaces the prompt: the prompt is ignored (the text encoders are not loaded)") }
            var s = GenerationSettings(prompt: prompt ?? "")
            s.negativePrompt = negative
            s.width = width; s.height = height; s.steps = steps; s.cfg = cfg
            s.seed = try Self.seed(seed)
            s.sampler = sampler; s.spacing = spacing; s.karras = karras; s.prediction = prediction; s.images = images
            var request = GenerateRequest(settings: s, output: output)
            request.outputFolder = outputDir
            request.checkpoint = checkpoint
            request.styles = try style.map(StyleChoice.parse)
            request.conditioning = conditioning
            request.encoder = encoder
            request.imageSize = imageSize
            request.encoderLora = encoderLora
            request.vae = vae
            request.vaeTiling = try vaeTile.map { try VAE.Tiling(tile: $0, overlap: vaeTileOverlap) }
            request.textEncoders = textEncoders
            request.grid = grid
            request.overwrite = force
            request.precision = precision
            request.encoderPrecision = encoderPrecision ?? (encoder == nil ? nil : .encoderDefault)
            request.registryHome = registry.home
            request.version = "mumu " + MumuVersion.string
            let job = try GenerateJob(request)

            // Ctrl-C stops before the next step (Interrupt owns the signal): only finished images are left.
            let bar = ProgressBar("generate", quiet: quiet || json)
            let report: GenerateReport = try Interrupt.cooperatively {
                let run = job.start()
                while let event = try run.next() {
                    switch event {
                    case let .note(m): if !json { bar.clear(); warn(m) }
                    case let .loading(path): if !json { bar.clear(); print("loading \(path) (\(precision.rawValue))") }
                    case .render: break
                    case let .step(render, step, total): bar.step(render, step, total)
                    case let .wrote(path): if !json { bar.clear(); print("wrote \(path)") }
                    }
                    if Interrupt.requested != nil {
                        run.stop()
                        bar.clear()
                        FileHandle.standardError.write(Data("mumu: interrupted; only finished images were written\n".utf8))
                        throw ExitCode(130)
                    }
                }
                return run.report
            }
            bar.clear()
            if json {
                print(JSONWriter.write(report.json(job)))
            } else {
                print("seed \(s.seed), \(s.steps) steps \(s.sampler.rawValue)\(s.karras ? " karras" : ""), cfg \(InfoText.formatFloat(s.cfg)), \(s.width)x\(s.height); load \(String(format: "%.1f", report.loadSeconds)) s")
                for t in report.timings {
                    print(String(format: "  %@: text %.1f s, denoise %.1f s (%.2f s/step), VAE %.1f s", t.render, t.encode, t.denoise, t.denoise / Double(s.steps), t.decode))
                }
            }
        }
    }

    /// A seed below 2^32 drawn at random for none or -1 (A1111's "random"); other negative seeds are refused.
    static func seed(_ given: Int64?) throws -> UInt64 {
        guard let given, given != -1 else { return UInt64.random(in: 0..<(1 << 32)) }
        guard given >= 0 else { throw ValidationError("--seed \(given): a seed is a number >= 0, or -1 for a random one") }
        return UInt64(given)
    }

}
