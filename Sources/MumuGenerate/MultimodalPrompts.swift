import Foundation
import MumuEncoder
import MumuFormats
import MumuSampler

/// A prompt and its negative prompt with `<image:PATH>` inside, made ready for MUMU's encoder before any model
/// loads: parsed, every image read, sized and hashed. The one preparation `mumu encode` and `mumu generate
/// --encoder` share, and the one place the encoder runs (freed before the caller loads the decoder).
struct MultimodalPrompts {
    let encoder: String
    let prompt: MultimodalPrompt
    let negative: MultimodalPrompt
    let images: [PreparedImage]
    let negativeImages: [PreparedImage]
    let imageSize: Int
    /// An `EncoderLora` file for the encoder (its headers checked against the folder's here) and the SHA-256 of its
    /// tensor data (AutoV3's, as A1111's `Lora hashes` give a LoRA).
    let lora: String?
    let loraSHA256: String?

    /// `imageSize` nil: the encoder folder's `mumu_image_size`, else 448.
    init(prompt: MultimodalPrompt, negative: MultimodalPrompt, encoder: String, imageSize: Int?, lora: String? = nil) throws {
        self.encoder = encoder
        self.lora = lora
        if let lora {
            _ = try EncoderLora.check(path: lora, folder: try Idefics2Folder(path: encoder))
            let file = try SafetensorsFile(path: lora)
            loraSHA256 = try Hashing.hashes(of: file.file, dataStart: file.header.dataStart).dataSHA256
        } else {
            loraSHA256 = nil
        }
        self.prompt = prompt
        self.negative = negative
        self.imageSize = try imageSize ?? MultimodalEncoder.folderImageSize(encoder)
        images = try MultimodalEncoder.prepareImages(prompt, imageSize: self.imageSize)
        negativeImages = try MultimodalEncoder.prepareImages(negative, imageSize: self.imageSize)
    }

    /// Refuses a decoder without MUMU's connector (headers only).
    static func requireConnector(_ path: String, name: String) throws {
        guard try SGMView.open(path).source.tensors.contains(where: { $0.name.hasPrefix(MumuConnector.prefix) }) else {
            throw GenerationError.invalidSettings("\(name) has no MUMU connector (connector.*): multimodal prompts need a mumu-decoder checkpoint (a merge into MUMU makes one from a fine-tune)")
        }
    }

    /// `name.safetensors: <AutoV3>` of the encoder LoRA (the infotext's and the conditioning file's form).
    var loraText: String? {
        guard let lora, let loraSHA256 else { return nil }
        return "\(URL(fileURLWithPath: lora).lastPathComponent): \(loraSHA256.prefix(12))"
    }

    /// Each image as written in the prompts (prompt first, then negative) and its file's SHA-256.
    var imageHashes: [(written: String, sha256: String)] {
        zip(prompt.imageWrittenPaths + negative.imageWrittenPaths, images + negativeImages).map { ($0, $1.sha256) }
    }

    /// `a.png: <sha256[:12]>, ...` (the infotext's and the conditioning file's form); nil without images.
    var imageHashesText: String? {
        let hashes = imageHashes
        return hashes.isEmpty ? nil : hashes.map { "\($0.written): \($0.sha256.prefix(12))" }.joined(separator: ", ")
    }

    /// Runs the encoder on the prompt and (when `negative`) the negative prompt; the encoder is freed on return.
    /// `lap` is called after loading and after encoding (stage timings).
    func encode(precision: WeightPrecision, negative withNegative: Bool, lap: (String) -> Void = { _ in })
        throws -> (cond: MultimodalEncoder.Encoded, uncond: MultimodalEncoder.Encoded?)
    {
        let model = try MultimodalEncoder(folder: encoder, precision: precision, imageSize: imageSize, lora: lora)
        lap("load encoder")
        let c = try model.encode(prompt, images: images)
        let u = withNegative ? try model.encode(negative, images: negativeImages) : nil
        lap("encode")
        return (c, u)
    }
}
