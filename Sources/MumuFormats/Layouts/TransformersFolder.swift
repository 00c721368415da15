import Foundation
import MumuTensor

/// A transformers model folder as `save_pretrained` writes it (or the Hub holds it): `config.json` with a
/// `model_type`, and the weights, one `model.safetensors` or shards listed by `model.safetensors.index.json`.
/// The tensors are exposed under their stored names (detection reads an Idefics2Model folder's bare names as
/// Idefics2ForConditionalGeneration's `model.` names). `ModelFile.open` takes a folder for one when its
/// top-level `config.json` names a `model_type` and it has no diffusers `model_index.json`.
public final class TransformersFolder: TensorSource, @unchecked Sendable {
    public let path: String
    /// The folder's `config.json`.
    public let config: JSONValue
    /// `config.json`'s `model_type` (e.g. `idefics2`).
    public let modelType: String
    /// The weights as opened: a `SafetensorsFile` or a `ShardedSafetensors`.
    public let weights: TensorSource
    public var tensors: [TensorInfo] { weights.tensors }
    public var metadata: [String: String] { weights.metadata }

    /// Whether `folder` looks like a transformers model folder rather than a diffusers pipeline: a top-level
    /// `config.json` and no `model_index.json` / `unet/` / `text_encoder/`, and either `model.safetensors` (or its
    /// index) or a config naming a `model_type` (a diffusers component folder's config has `_class_name` instead).
    public static func looksLike(_ folder: String) -> Bool {
        guard fileExists(folder + "/config.json"), !fileExists(folder + "/model_index.json"),
              !isDirectory(folder + "/unet"), !isDirectory(folder + "/text_encoder") else { return false }
        if fileExists(folder + "/model.safetensors") || fileExists(folder + "/model.safetensors.index.json") { return true }
        guard let file = try? MappedFile(path: folder + "/config.json"), let json = try? JSONParser.parse(file.all) else { return false }
        return json["model_type"]?.stringValue != nil
    }

    public init(path folder: String) throws {
        let folder = folder.count > 1 && folder.hasSuffix("/") ? String(folder.dropLast()) : folder
        path = folder
        let configPath = folder + "/config.json"
        guard fileExists(configPath) else {
            throw FormatError.missingComponent(path: folder, component: "config.json (a transformers model folder has config.json and model.safetensors)")
        }
        let json: JSONValue
        do {
            let file = try MappedFile(path: configPath)
            json = try JSONParser.parse(file.all)
        } catch let e as JSONParseError {
            throw FormatError.malformed(path: configPath, reason: "not valid JSON: \(e)")
        }
        guard json.objectValue != nil else { throw FormatError.malformed(path: configPath, reason: "not a JSON object") }
        guard let type = json["model_type"]?.stringValue else {
            throw FormatError.malformed(path: configPath, reason: "field 'model_type' is missing or not a string (not a transformers config)")
        }
        config = json
        modelType = type
        let index = folder + "/model.safetensors.index.json"
        let single = folder + "/model.safetensors"
        if fileExists(index) {
            weights = try ShardedSafetensors(indexPath: index)
        } else if fileExists(single) {
            weights = try SafetensorsFile(path: single)
        } else {
            let others = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
            guard others.count == 1 else {
                throw FormatError.missingComponent(path: folder, component: others.isEmpty
                    ? "weights: neither model.safetensors nor model.safetensors.index.json (mumu reads safetensors only)"
                    : "model.safetensors.index.json: several .safetensors files (\(others.joined(separator: ", "))) and no index saying how they go together")
            }
            weights = try SafetensorsFile(path: folder + "/" + others[0])
        }
    }

    public func tensor(_ name: String) throws -> TensorData { try weights.tensor(name) }

    /// Bytes on disk of the weight files (all shards).
    public var weightFileBytes: Int {
        if let sharded = weights as? ShardedSafetensors { return sharded.fileBytes }
        return FileIdentity(path: weights.path)?.size ?? 0
    }
}

extension ShardedSafetensors {
    /// The set's size on disk: every shard plus the index.
    public var fileBytes: Int {
        shards.reduce(FileIdentity(path: path)?.size ?? 0) { $0 + (FileIdentity(path: $1.path)?.size ?? 0) }
    }
}

/// Writes a transformers model folder: the weights (one `model.safetensors`, or `model-0000i-of-0000n.safetensors`
/// shards of at most `maxShardSize` tensor bytes each plus `model.safetensors.index.json`, as transformers'
/// `save_pretrained` does) and small files (`config.json`, ...). Everything goes into a hidden folder beside the
/// destination, renamed into place at the end: an interrupted run leaves nothing at the destination.
public final class TransformersFolderWriter: ModelSink, @unchecked Sendable {
    public let path: String
    /// Weight files written (names inside the folder).
    public let weightFiles: [String]
    private let temporary: String
    private let overwrite: Bool
    private let inner: ModelSink
    private let files: [(name: String, contents: String)]
    private var done = false

    public init(path: String, tensors: [TensorInfo], metadata: [String: String], maxShardSize: Int,
                files: [(name: String, contents: String)], overwrite: Bool) throws {
        let path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        self.path = path
        self.overwrite = overwrite
        self.files = files
        try OutputPath.check(path, overwrite: overwrite, folder: true)
        let url = URL(fileURLWithPath: path)
        let parent = url.deletingLastPathComponent().path
        temporary = parent + "/." + url.lastPathComponent + ".mumu-partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: false)
        } catch {
            throw FormatError.io(path: temporary, reason: "cannot create the output folder (\(error.localizedDescription))")
        }
        let total = tensors.reduce(0) { $0 + $1.byteCount }
        do {
            if total <= maxShardSize {
                inner = try SafetensorsWriter(path: temporary + "/model.safetensors", tensors: tensors, metadata: metadata, overwrite: true)
                weightFiles = ["model.safetensors"]
            } else {
                let sharded = try ShardedSafetensorsWriter(path: temporary + "/model.safetensors", tensors: tensors, metadata: metadata,
                                                           maxShardSize: maxShardSize, overwrite: true)
                inner = sharded
                weightFiles = sharded.writers.map { $0.path.split(separator: "/").last.map(String.init) ?? $0.path } + ["model.safetensors.index.json"]
            }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
    }

    public func writePart(_ name: String, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        try inner.writePart(name, offset: offset, bytes)
    }

    public func finish() throws {
        do {
            try inner.finish()
            for f in files {
                let target = temporary + "/" + f.name
                do { try Data(f.contents.utf8).write(to: URL(fileURLWithPath: target)) } catch {
                    throw FormatError.io(path: target, reason: "cannot write (\(error.localizedDescription))")
                }
            }
            try OutputPath.moveFolder(temporary, into: path, overwrite: overwrite)
            done = true
        } catch {
            abort()
            throw error
        }
    }

    public func abort() {
        guard !done else { return }
        done = true
        inner.abort()
        try? FileManager.default.removeItem(atPath: temporary)
    }

    deinit { abort() }
}
