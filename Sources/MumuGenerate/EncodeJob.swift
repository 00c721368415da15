import Foundation
import MumuEncoder
import MumuFormats
import MumuSampler
import MumuTensor

/// `mumu encode` as a library call: a prompt (and negative prompt) with `<image:PATH>` inside, through MUMU's
/// encoder (an Idefics2 folder) and a decoder's connector, written as the conditioning file `--conditioning`
/// reads (`context`, `pooled`, `negative_context`, `negative_pooled`; the negative at its own length).
public final class EncodeJob {
    public struct Request: Sendable {
        public var prompt: String
        public var negativePrompt = ""
        /// The Idefics2 folder (config.json, weights, tokenizer.json).
        public var encoder: String
        /// A checkpoint with the MUMU connector (`connector.*`): a mumu-decoder file.
        public var decoder: String
        public var output: String
        public var imageSize: Int?
        /// A LoRA for the encoder's LM and projector (`EncoderLora`: PEFT or kohya names), kept unmerged.
        public var encoderLora: String?
        public var precision: WeightPrecision = .f32
        public var workingDirectory = FileManager.default.currentDirectoryPath
        public var overwrite = false

        public init(prompt: String, encoder: String, decoder: String, output: String) {
            self.prompt = prompt
            self.encoder = encoder
            self.decoder = decoder
            self.output = output
        }
    }

    public struct Report: Sendable {
        public var tokens = 0
        public var negativeTokens = 0
        public var images: [(written: String, sha256: String)] = []
        /// Seconds per stage: images, encoder load, encoding, connector.
        public var stages: [(name: String, seconds: Double)] = []
    }

    public let request: Request
    let prompts: MultimodalPrompts
    let imageSeconds: Double

    /// Checks everything before any model loads: the output path, the prompts and their images, the encoder folder
    /// and that the decoder has a connector.
    public init(_ request: Request) throws {
        self.request = request
        try OutputPath.check(request.output, overwrite: request.overwrite)
        for (what, path) in [("encoder folder", request.encoder), ("decoder", request.decoder), ("encoder LoRA", request.encoderLora ?? request.encoder)] where !fileExists(path) {
            throw GenerationError.invalidSettings("the \(what) \(path) does not exist")
        }
        let t0 = Date()
        prompts = try MultimodalPrompts(prompt: try MultimodalPrompt(parsing: request.prompt, workingDirectory: request.workingDirectory),
                                        negative: try MultimodalPrompt(parsing: request.negativePrompt, workingDirectory: request.workingDirectory),
                                        encoder: request.encoder, imageSize: request.imageSize, lora: request.encoderLora)
        imageSeconds = Date().timeIntervalSince(t0)
        try MultimodalPrompts.requireConnector(request.decoder, name: request.decoder)
    }

    /// Encodes (the encoder is freed before the connector loads) and writes the file atomically.
    @discardableResult
    public func run() throws -> Report {
        var report = Report()
        report.stages.append(("images", imageSeconds))
        var t = Date()
        func lap(_ name: String) { report.stages.append((name, Date().timeIntervalSince(t))); t = Date() }
        let (cond, uncond) = try prompts.encode(precision: request.precision, negative: true, lap: lap)
        let connector = try MumuConnector(checkpoint: try DecoderCheckpoint(path: request.decoder), precision: request.precision)
        let c = try connector.conditioning(cond.hidden), u = try uncond.map { try connector.conditioning($0.hidden) }
        lap("connector")
        var metadata = ["mumu_prompt": request.prompt, "mumu_negative_prompt": request.negativePrompt,
                        "mumu_encoder": URL(fileURLWithPath: request.encoder).lastPathComponent,
                        "mumu_image_size": String(prompts.imageSize)]
        metadata["mumu_image_hashes"] = prompts.imageHashesText
        metadata["mumu_encoder_lora"] = prompts.loraText
        try ConditioningFile.write(cond: c, uncond: u, to: request.output, metadata: metadata, overwrite: request.overwrite)
        report.tokens = cond.tokens
        report.negativeTokens = uncond?.tokens ?? 0
        report.images = prompts.imageHashes
        return report
    }
}

extension ConditioningFile {
    /// Writes conditioning as `--conditioning` reads it (f32), atomically.
    public static func write(cond: Conditioning, uncond: Conditioning?, to path: String, metadata: [String: String] = [:],
                             overwrite: Bool) throws {
        var tensors = [("context", cond.context), ("pooled", cond.pooled)]
        if let uncond { tensors += [("negative_context", uncond.context), ("negative_pooled", uncond.pooled)] }
        let infos = tensors.map { TensorInfo(name: $0.0, dtype: .f32, shape: $0.1.shape) }
        let writer = try SafetensorsWriter(path: path, tensors: infos, metadata: metadata, overwrite: overwrite)
        for (info, (_, t)) in zip(infos, tensors) {
            try writer.write(TensorData.owned(info, bytes: t.data.withUnsafeBytes { Array($0) }))
        }
        try writer.finish()
    }
}
