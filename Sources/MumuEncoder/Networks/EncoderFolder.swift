import Foundation
import MumuFormats
import MumuSampler

/// An Idefics2 model folder as transformers' `save_pretrained` writes it (or the Hub holds it): `config.json`
/// (`Idefics2Config`) and the weights, one `model.safetensors` or shards listed by `model.safetensors.index.json`.
/// `Idefics2ForConditionalGeneration` stores the networks under `model.` (plus an `lm_head`), `Idefics2Model`
/// without a prefix; which one a folder holds is decided from the token embedding's name. The perceiver resampler
/// and the LM head are never read (MUMU drops the perceiver; the encoder returns hidden states, not logits).
public final class Idefics2Folder: @unchecked Sendable {
    public let path: String
    public let config: Idefics2Config
    /// The weights (single file or shards; tensors are read lazily).
    public let source: TensorSource
    /// "model." (ForConditionalGeneration) or "" (Idefics2Model).
    public let prefix: String

    /// The token embedding under either prefix: the tensor that says a folder's weights are an Idefics2's.
    static let embedding = "text_model.embed_tokens.weight"

    public init(path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw EncoderError.notIdefics2(path: path, reason: "no such folder")
        }
        guard isDir.boolValue else {
            throw EncoderError.notIdefics2(path: path, reason: "not a folder (give the Idefics2 folder holding config.json and the safetensors weights)")
        }
        self.path = path
        let configPath = (path as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw EncoderError.notIdefics2(path: path, reason: "no readable config.json in the folder")
        }
        let json: JSONValue
        do {
            json = try data.withUnsafeBytes { try JSONParser.parse($0) }
        } catch {
            throw EncoderError.notIdefics2(path: configPath, reason: "config.json is not valid JSON (\(error))")
        }
        config = try Idefics2Config.parse(json, path: configPath)

        let index = (path as NSString).appendingPathComponent("model.safetensors.index.json")
        let single = (path as NSString).appendingPathComponent("model.safetensors")
        if FileManager.default.fileExists(atPath: index) {
            source = try ShardedSafetensors(indexPath: index)
        } else if FileManager.default.fileExists(atPath: single) {
            source = try SafetensorsFile(path: single)
        } else {
            let others = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
            guard others.count == 1 else {
                throw EncoderError.notIdefics2(path: path, reason: others.isEmpty
                    ? "no weights: neither model.safetensors nor model.safetensors.index.json (mumu reads safetensors only)"
                    : "several .safetensors files (\(others.joined(separator: ", "))) but no model.safetensors.index.json saying how they go together")
            }
            source = try SafetensorsFile(path: (path as NSString).appendingPathComponent(others[0]))
        }
        let names = Set(source.names)
        if names.contains("model." + Self.embedding) {
            prefix = "model."
        } else if names.contains(Self.embedding) {
            prefix = ""
        } else {
            throw EncoderError.notIdefics2(path: source.path,
                reason: "the weights have no \(Self.embedding) (nor model.\(Self.embedding)): not an Idefics2 checkpoint")
        }
    }

    /// A reader of the folder's tensors under `prefix + component` ("vision_model.", "connector.", "text_model.").
    func reader(_ component: String, precision: WeightPrecision, table: ParameterTable?) -> WeightReader {
        WeightReader(source: source, prefix: prefix + component, precision: precision, table: table)
    }
}
