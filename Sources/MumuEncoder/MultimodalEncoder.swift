import Foundation
import MumuFormats
import MumuSampler
import MumuTensor

/// MUMU's encoder for prompts with `<image:PATH>` inside: an Idefics2 folder's tokenizer and networks turn a prompt
/// into the final normed hidden states [T, hidden] (as transformers' processing_idefics2.py and modeling_idefics2.py;
/// docs/multimodal-inputs.md: BOS, the text's tokens, and per image `<fake_token_around_image>` + one `<image>` per
/// 14x14 patch + `<fake_token_around_image>`, whose `<image>` embeddings are the projected patches). The connector
/// (in the decoder file) then makes them conditioning.
///
/// Loading order matters on a 24 GB machine: Idefics2-8b in bf16 is 16 GB, so callers encode every prompt, drop
/// the encoder, and only then load the decoder (`GenerateJob` and `mumu encode` do).
public final class MultimodalEncoder: @unchecked Sendable {
    public let folder: String
    public let tokenizer: SentencePieceBPETokenizer
    public let encoder: Idefics2Encoder
    /// The longer edge of every image, in pixels (a multiple of 14).
    public let imageSize: Int

    /// What one prompt became.
    public struct Encoded: Sendable {
        /// The final normed hidden states [T, hidden].
        public var hidden: Tensor
        public var images: [PreparedImage]
        /// T, of which `imageTokens` are image patches.
        public var tokens: Int
        public var imageTokens: Int
    }

    /// Loads the folder's tokenizer.json and networks, with `lora` (an `EncoderLora` file) attached unmerged.
    /// `imageSize` nil: the folder's `mumu_image_size` (preprocessor_config.json), else 448.
    public init(folder: String, precision: WeightPrecision = .f32, imageSize: Int? = nil, lora: String? = nil) throws {
        self.folder = folder
        let tokenizerPath = folder + "/tokenizer.json"
        guard fileExists(tokenizerPath) else {
            throw EncoderError.notIdefics2(path: folder, reason: "no tokenizer.json (the encoder folder needs its tokenizer)")
        }
        tokenizer = try SentencePieceBPETokenizer(path: tokenizerPath)
        self.imageSize = try imageSize ?? Self.folderImageSize(folder)
        _ = try MumuImageSize.target(width: 14, height: 14, imageSize: self.imageSize)   // a multiple of 14, checked
        let opened = try Idefics2Folder(path: folder)
        guard opened.config.imageTokenId == tokenizer.imageTokenId else {
            throw EncoderError.config(path: folder, field: "image_token_id",
                                      reason: "config.json says \(opened.config.imageTokenId), tokenizer.json's <image> is \(tokenizer.imageTokenId)")
        }
        let checked = try lora.map { try EncoderLora.check(path: $0, folder: opened) }
        encoder = try Idefics2Encoder(folder: opened, precision: precision)
        try checked?.attach(to: encoder)
    }

    /// `mumu_image_size` from the folder's preprocessor_config.json, else 448.
    public static func folderImageSize(_ folder: String) throws -> Int {
        let path = folder + "/preprocessor_config.json"
        guard let data = FileManager.default.contents(atPath: path) else { return MumuImageSize.defaultImageSize }
        let json: JSONValue
        do { json = try data.withUnsafeBytes { try JSONParser.parse($0) } } catch {
            throw EncoderError.config(path: path, field: "(file)", reason: "not valid JSON: \(error)")
        }
        guard let value = json["mumu_image_size"] else { return MumuImageSize.defaultImageSize }
        guard case let .int(size) = value else {
            throw EncoderError.config(path: path, field: "mumu_image_size", reason: "must be an integer (a multiple of 14)")
        }
        return size
    }

    /// Reads, sizes and normalizes every image of `prompt` (before any network runs: a bad image is reported first).
    public static func prepareImages(_ prompt: MultimodalPrompt, imageSize: Int) throws -> [PreparedImage] {
        try prompt.imagePaths.map { try PreparedImage(path: $0, imageSize: imageSize) }
    }

    /// The hidden states of `prompt` (its images prepared already, or prepared here).
    public func encode(_ prompt: MultimodalPrompt, images prepared: [PreparedImage]? = nil) throws -> Encoded {
        let images = try prepared ?? Self.prepareImages(prompt, imageSize: imageSize)
        let counts = images.map(\.patchCount)
        let ids = try prompt.tokens(tokenizer: tokenizer, imagePatchCounts: counts)
        let embeddings = try images.map { try encoder.encodeImage(pixels: $0.pixelValues, height: $0.height, width: $0.width) }
        let hidden = try encoder.hiddenStates(ids: ids.map { Int32($0) }, imageEmbeddings: embeddings)
        return Encoded(hidden: hidden, images: images, tokens: ids.count, imageTokens: counts.reduce(0, +))
    }
}

/// MUMU's conditioning from hidden states through a decoder's connector.
extension MumuConnector {
    /// context [1, T, width] and pooled [1, pooled] for the UNet.
    public func conditioning(_ hidden: Tensor) throws -> Conditioning {
        let (context, pooled) = try self(hidden)
        return Conditioning(context: Tensor(shape: [1] + context.shape.suffix(2), data: context.data),
                            pooled: Tensor(shape: [1, pooled.count], data: pooled))
    }
}
