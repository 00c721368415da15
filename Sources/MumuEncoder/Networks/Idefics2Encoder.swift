import Foundation
import MumuFormats
import MumuSampler
import MumuTensor

/// MUMU's encoder: an Idefics2 folder's SigLIP vision tower, modality projection and Mistral text model (no
/// perceiver, no LM head), loaded once in the precision asked.
///
///     let encoder = try Idefics2Encoder(folder: dir, precision: .bf16)
///     let image = try encoder.encodeImage(pixels: chw, height: h, width: w)   // [nh * nw, hidden]
///     let states = try encoder.hiddenStates(ids: ids, imageEmbeddings: [image]) // [T, hidden]
///
/// `ids` hold, per image, `<fake_token_around_image>`, one `<image>` (`config.imageTokenId`) per patch, and
/// `<fake_token_around_image>`; the `<image>` rows are replaced by the images' embeddings in order.
public final class Idefics2Encoder: @unchecked Sendable {
    public let path: String
    public let config: Idefics2Config
    public let precision: WeightPrecision
    /// Every matrix product's layer by its checkpoint name (with the folder's `model.` prefix when it has one),
    /// for LoRAs kept unmerged (`DenseWeight.lowRank`).
    public let parameters: ParameterTable
    public let vision: SigLIPVision
    public let projection: ModalityProjection
    public let text: MistralModel

    /// Loads `folder` (see `Idefics2Folder`). Weights of the matrix products become f32 or bf16 (`precision`; bf16
    /// runs on the CPU's best bf16 GEMM path, see `BF16Matrix`), the token embedding f32 or bf16 rows, norms and biases f32.
    /// The folder's files are closed once loaded.
    public convenience init(folder: String, precision: WeightPrecision = .f32) throws {
        try self.init(folder: try Idefics2Folder(path: folder), precision: precision)
    }

    public init(folder: Idefics2Folder, precision: WeightPrecision = .f32) throws {
        path = folder.path
        config = folder.config
        self.precision = precision
        parameters = ParameterTable()
        vision = try SigLIPVision(reader: folder.reader("vision_model.", precision: precision, table: parameters),
                                  config: config.vision)
        projection = try ModalityProjection(reader: folder.reader("connector.modality_projection.", precision: precision, table: parameters),
                                            inputs: config.vision.hiddenSize, intermediate: config.text.intermediateSize,
                                            outputs: config.text.hiddenSize, activation: config.text.activation)
        text = try MistralModel(reader: folder.reader("text_model.", precision: precision, table: parameters), config: config.text)
        WeightMemory.modelLoaded()
    }

    /// The projected patches of one image: pixels [3, height, width] (rescaled and normalized, row-major), height
    /// and width multiples of the patch size -> [nh * nw, text hidden], one row per patch (row-major over the grid).
    public func encodeImage(pixels: [Float], height: Int, width: Int) throws -> Tensor {
        projection(try vision(pixels: pixels, height: height, width: width))
    }

    /// The text model's final normed hidden states [T, hidden] for `ids` with the images' embeddings in place of
    /// the `<image>` tokens (as many `<image>` tokens as embedding rows, else `EncoderError.input`).
    public func hiddenStates(ids: [Int32], imageEmbeddings: [Tensor] = []) throws -> Tensor {
        try text(ids: ids, imageToken: config.imageTokenId, imageEmbeddings: imageEmbeddings)
    }

    /// The patch grid an image of height x width pixels gives (rows, columns), or nil when it is not a multiple
    /// of the patch size.
    public func patchGrid(height: Int, width: Int) -> (rows: Int, columns: Int)? {
        let p = config.vision.patchSize
        guard height > 0, width > 0, height % p == 0, width % p == 0 else { return nil }
        return (height / p, width / p)
    }
}
