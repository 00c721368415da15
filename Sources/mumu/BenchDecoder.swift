import ArgumentParser
import Foundation
import MumuFormats
import MumuSampler
import MumuTensor

/// `mumu bench unet`: one SDXL UNet evaluation as classifier-free guidance runs it (scripts/bench_decoder.sh
/// runs diffusers on the same inputs in the same run).
struct BenchUNet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unet",
        abstract: "Time UNet evaluations on a checkpoint: load, then --repeat forward passes; prints wall, GFLOP/s and peak RSS.")
    @Argument(help: "The checkpoint (any format mumu reads).") var checkpoint: String
    @Option(help: "Image size in pixels (latent = size / 8).") var size = 512
    @Option(help: "Batch (2 = one step of classifier-free guidance).") var batch = 2
    @Option(help: "Weight precision: f32 or bf16.") var precision: WeightPrecision = .f32
    @Option(name: .customLong("repeat"), help: "Forward passes to time.") var repeats = 2
    @Option(help: "Inputs (sample, timestep, context, pooled, time_ids) from a safetensors file instead of seeded noise.") var inputs: String?
    @Option(help: "Save the last output as `out` (f32) in this safetensors file.") var saveOutput: String?

    func run() throws {
        try runReportingErrors {
            var t0 = Date()
            let unet = try UNet(checkpoint: DecoderCheckpoint(path: checkpoint), precision: precision)
            let load = Date().timeIntervalSince(t0)
            print(String(format: "load %.1f s, %@ of %@ weights, %@", load, formatBytes(unet.weightBytes), precision.rawValue, ProcessStats.residentSummary))
            let input = try inputs.map(Self.readInputs) ?? Self.seededInputs(unet.config, size: size, batch: batch)
            var out = Tensor(zeros: [0])
            for i in 0..<max(1, repeats) {
                FlopCounter.reset()
                t0 = Date()
                out = try unet(input.sample, timesteps: input.timesteps, context: input.context, pooled: input.pooled, timeIds: input.timeIds)
                let wall = Date().timeIntervalSince(t0)
                let flops = Double(FlopCounter.value)
                print(String(format: "eval %d: %.2f s, %.3f TFLOP counted, %.1f GFLOP/s (latent %@, batch %d, %@)", i + 1, wall, flops / 1e12,
                             flops / wall / 1e9, input.sample.shape.dropFirst(2).map(String.init).joined(separator: "x"), input.sample.shape[0], precision.rawValue))
            }
            let finite = out.data.allSatisfy(\.isFinite)
            print("output \(out.shape), finite: \(finite), peak RSS \(formatBytes(ProcessStats.peakResidentBytes))")
            if let saveOutput {
                let writer = try SafetensorsWriter(path: saveOutput, tensors: [TensorInfo(name: "out", dtype: .f32, shape: out.shape)], overwrite: true)
                try out.data.withUnsafeBytes { try writer.write("out", $0) }
                try writer.finish()
            }
        }
    }

    struct Inputs { var sample: Tensor; var timesteps: [Float]; var context: Tensor; var pooled: Tensor?; var timeIds: Tensor? }

    static func readInputs(_ path: String) throws -> Inputs {
        let file = try SafetensorsFile(path: path)
        func get(_ name: String) throws -> Tensor {
            guard let info = file.tensors.first(where: { $0.name == name }) else { throw ValidationError("\(path): no tensor \(name)") }
            return Tensor(shape: info.shape, data: try file.tensor(name).floats())
        }
        let names = Set(file.names)
        return Inputs(sample: try get("sample"), timesteps: try get("timestep").data, context: try get("context"),
                      pooled: names.contains("pooled") ? try get("pooled") : nil, timeIds: names.contains("time_ids") ? try get("time_ids") : nil)
    }

    /// Deterministic values in [-1, 1) of the given shape (a fixed LCG).
    static func noise(_ shape: [Int], seed: UInt64) -> Tensor {
        var state = seed
        return Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state) >> 40) / Float(1 << 23)
        })
    }

    /// Deterministic inputs of the right shapes.
    static func seededInputs(_ c: UNetConfig, size: Int, batch: Int) -> Inputs {
        var seed: UInt64 = 42
        func noise(_ shape: [Int]) -> Tensor { seed += 1; return Self.noise(shape, seed: seed) }
        let pooledWidth = (c.admIn ?? 0) - 6 * (c.addTimeDim ?? 0)
        let ids = Tensor(shape: [batch, 6], data: (0..<batch).flatMap { _ in [Float(size), Float(size), 0, 0, Float(size), Float(size)] })
        return Inputs(sample: noise([batch, c.inChannels, size / 8, size / 8]), timesteps: [Float](repeating: 981, count: batch),
                      context: noise([batch, 77, c.contextDim]), pooled: c.admIn == nil ? nil : noise([batch, pooledWidth]),
                      timeIds: c.admIn == nil ? nil : ids)
    }
}

/// `--precision f32|bf16` (ArgumentParser lists the values and rejects others).
extension WeightPrecision: ExpressibleByArgument {}

/// The process's resident memory, from /proc/self/status.
enum ProcessStats {
    static func field(_ name: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            // "VmRSS:\t 5170000 kB" (the value is padded with spaces, or not, after a tab).
            let kb = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int($0) }.first ?? 0
            return kb * 1024
        }
        return 0
    }
    static var residentBytes: Int { field("VmRSS") }
    /// "RSS 7.2 GB (anonymous 5.1 GB, file 2.0 GB)".
    static var residentSummary: String {
        "RSS \(formatBytes(field("VmRSS"))) (anonymous \(formatBytes(field("RssAnon"))), file-backed \(formatBytes(field("RssFile"))))"
    }
    static var peakResidentBytes: Int { field("VmHWM") }
}

/// `mumu bench vae`: one VAE decode (and optionally encode) at a given image size.
struct BenchVAE: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vae", abstract: "Time a VAE decode of seeded latents at --size pixels.")
    @Argument(help: "The checkpoint.") var checkpoint: String
    @Option(help: "Image size in pixels (latent = size / 8).") var size = 1024
    @Option(help: "Weight precision: f32 or bf16.") var precision: WeightPrecision = .f32
    @Option(name: .customLong("repeat"), help: "Decodes to time.") var repeats = 1
    @Option(parsing: .unconditional, help: "Decode in tiles of this many pixels (generate's --vae-tile).") var tile: Int?
    @Option(parsing: .unconditional, help: "With --tile: the overlap in pixels (default a quarter of the tile).") var tileOverlap: Int?

    func run() throws {
        try runReportingErrors {
            if tileOverlap != nil && tile == nil { throw ValidationError("--tile-overlap needs --tile") }
            let tiling = try tile.map { try VAE.Tiling(tile: $0, overlap: tileOverlap) }
            var t0 = Date()
            let vae = try VAE(checkpoint: DecoderCheckpoint(path: checkpoint), precision: precision)
            print(String(format: "load %.1f s", Date().timeIntervalSince(t0)) + (tiling.map { ", decoding in \($0)" } ?? ""))
            let latents = BenchUNet.noise([1, 4, size / 8, size / 8], seed: 7)
            for i in 0..<max(1, repeats) {
                FlopCounter.reset()
                t0 = Date()
                let image = try vae.decode(latents: latents, tiling: tiling)
                let wall = Date().timeIntervalSince(t0)
                print(String(format: "decode %d: %.2f s, %.3f TFLOP counted, %.1f GFLOP/s, image %@, peak RSS %@", i + 1, wall,
                             Double(FlopCounter.value) / 1e12, Double(FlopCounter.value) / wall / 1e9, "\(image.shape)",
                             formatBytes(ProcessStats.peakResidentBytes)))
            }
        }
    }
}

/// `mumu bench text`: both SDXL text encoders on one prompt (tokenize, CLIP-L penultimate, bigG penultimate + pooled).
struct BenchText: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "text", abstract: "Time the two text encoders on one prompt.")
    @Argument(help: "The checkpoint.") var checkpoint: String
    @Option(help: "The prompt.") var prompt = "a watercolor painting of a lighthouse on a cliff at dawn, soft light, highly detailed"
    @Option(help: "Weight precision: f32 or bf16.") var precision: WeightPrecision = .f32
    @Option(name: .customLong("repeat"), help: "Encodes to time.") var repeats = 3

    func run() throws {
        try runReportingErrors {
            var t0 = Date()
            let checkpoint = try DecoderCheckpoint(path: checkpoint)
            let clipL = try CLIPTextEncoder(checkpoint: checkpoint, component: .te1, precision: precision)
            let bigG = try CLIPTextEncoder(checkpoint: checkpoint, component: .te2, precision: precision)
            print(String(format: "load %.1f s", Date().timeIntervalSince(t0)))
            for i in 0..<max(1, repeats) {
                FlopCounter.reset()
                t0 = Date()
                let l = CLIPTokenizer.shared.tokenize(prompt, pad: CLIPTokenizer.padCLIPL)
                let g = CLIPTokenizer.shared.tokenize(prompt, pad: CLIPTokenizer.padBigG)
                let a = try clipL.encode(ids: [l.ids], eosIndex: [l.eos])
                let b = try bigG.encode(ids: [g.ids], eosIndex: [g.eos])
                let wall = Date().timeIntervalSince(t0)
                print(String(format: "encode %d: %.3f s (tokenize + CLIP-L + bigG), %.1f GFLOP counted; context %@ + %@, pooled %@", i + 1, wall,
                             Double(FlopCounter.value) / 1e9, "\(a.penultimate.shape)", "\(b.penultimate.shape)", "\(b.pooled?.shape ?? [])"))
            }
        }
    }
}
