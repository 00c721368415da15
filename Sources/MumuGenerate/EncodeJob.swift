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
    let prompt: MultimodalPrompt
    let negative: MultimodalPrompt
    let images: [PreparedImage]
    let negativeImages: [PreparedImage]
    let imageSize: Int
    let imageSeconds: Double

    /// Checks everything before any model loads: the output path, the prompts and their images, the encoder folder
    /// and that the decoder has a connector.
    public init(_ request: Request) throws {
        self.request = request
        try OutputPath.check(request.output, overwrite: request.overwrite)
        for (what, path) in [("encoder folder", request.encoder), ("decoder", request.decoder)] where !fileExists(path) {
            throw GenerationError.invalidSettings("the \(what) \(path) does not exist")
        }
        let t0 = Date()
        prompt = try MultimodalPrompt(parsing: request.prompt, workingDirectory: request.workingDirectory)
        negative = try MultimodalPrompt(parsing: request.negativePrompt, workingDirectory: request.workingDirectory)
        imageSize = try request.imageSize ?? MultimodalEncoder.folderImageSize(request.encoder)
        images = try MultimodalEncoder.prepareImages(prompt, imageSize: imageSize)
        negativeImages = try MultimodalEncoder.prepareImages(negative, imageSize: imageSize)
        imageSeconds = Date().timeIntervalSince(t0)
        let view = try SGMView.open(request.decoder)
        guard view.source.tensors.contains(where: { $0.name.hasPrefix(MumuConnector.prefix) }) else {
            throw GenerationError.invalidSettings("\(request.decoder) has no MUMU connector (connector.*): give a mumu-decoder checkpoint")
        }
    }

    /// Encodes (the encoder is freed before the connector loads) and writes the file atomically.
    @discardableResult
    public func run() throws -> Report {
        var report = Report()
        report.stages.append(("images", imageSeconds))
        var t = Date()
        func lap(_ name: String) { report.stages.append((name, Date().timeIntervalSince(t))); t = Date() }
        let (cond, uncond): (MultimodalEncoder.Encoded, MultimodalEncoder.Encoded) = try {
            let encoder = try MultimodalEncoder(folder: request.encoder, precision: request.precision, imageSize: imageSize)
            lap("load encoder")
            let c = try encoder.encode(prompt, images: images)
            let u = try encoder.encode(negative, images: negativeImages)
            lap("encode")
            return (c, u)
        }()
        let connector = try MumuConnector(checkpoint: try DecoderCheckpoint(path: request.decoder), precision: request.precision)
        let c = try connector.conditioning(cond.hidden), u = try connector.conditioning(uncond.hidden)
        lap("connector")
        let hashes = zip(prompt.imageWrittenPaths + negative.imageWrittenPaths, images + negativeImages).map { ($0, $1.sha256) }
        var metadata = ["mumu_prompt": request.prompt, "mumu_negative_prompt": request.negativePrompt,
                        "mumu_encoder": URL(fileURLWithPath: request.encoder).lastPathComponent,
                        "mumu_image_size": String(imageSize)]
        if !hashes.isEmpty { metadata["mumu_image_hashes"] = hashes.map { "\($0.0): \($0.1.prefix(12))" }.joined(separator: ", ") }
        try ConditioningFile.write(cond: c, uncond: u, to: request.output, metadata: metadata, overwrite: request.overwrite)
        report.tokens = cond.tokens
        report.negativeTokens = uncond.tokens
        report.images = hashes
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
