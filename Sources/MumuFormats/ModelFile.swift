/// Opens whatever a user points at: a safetensors file, one shard of a sharded set (the whole set
/// is opened), a `*.index.json`, a PyTorch `.ckpt` / `.pt` zip (read without executing pickle code),
/// a diffusers folder, or a transformers model folder (config.json + model.safetensors or shards: Idefics2).
/// The format is decided by content, not by file name.
public enum ModelFile {
    public enum Format: String, Sendable {
        case safetensors, shardedSafetensors = "sharded-safetensors", ckpt, diffusers
        /// A transformers model folder (`TransformersFolder`).
        case transformers
    }

    public static func open(_ path: String) throws -> (source: TensorSource, format: Format) {
        guard fileExists(path) else { throw FormatError.io(path: path, reason: "no such file or folder") }
        if isDirectory(path) {
            if TransformersFolder.looksLike(path) { return (try TransformersFolder(path: path), .transformers) }
            return (try DiffusersFolder(path: path), .diffusers)
        }
        if path.hasSuffix(".index.json") {
            return (try ShardedSafetensors(indexPath: path), .shardedSafetensors)
        }
        if let index = ShardedSafetensors.indexPath(forShard: path) {
            return (try ShardedSafetensors(indexPath: index), .shardedSafetensors)
        }
        let magic = readPrefix(path, count: 4)
        if magic == [0x50, 0x4B, 0x03, 0x04] || magic == [0x50, 0x4B, 0x05, 0x06] {
            return (try CheckpointFile(path: path), .ckpt)
        }
        if magic.first == 0x80, path.hasSuffix(".ckpt") || path.hasSuffix(".pt") || path.hasSuffix(".pth") || path.hasSuffix(".bin") {
            throw FormatError.unsupported("\(path): a legacy (pre-1.6, non-zip) PyTorch file; mumu reads the zip format only: re-save it with torch.save in a recent PyTorch, or get a .safetensors version")
        }
        return (try SafetensorsFile(path: path), .safetensors)
    }
}

/// A model opened and viewed under sgm (single-file) names, whatever layout it was stored in:
/// what the merge engine and the decoder both read.
public struct SGMView: Sendable {
    /// The tensors under sgm names (the file itself, or a lazy renaming view of a diffusers layout).
    public let source: TensorSource
    /// The source as opened (diffusers names for a folder), for metadata and configs.
    public let original: TensorSource
    public let format: ModelFile.Format
    /// The layout the tensors were stored in.
    public let layout: StoredLayout

    /// Opens `path` (any format `ModelFile.open` reads) and views it under sgm names. Throws when a
    /// diffusers-layout tensor has no sgm name (`unmappedDescription` names the first).
    public static func open(_ path: String) throws -> SGMView {
        let (source, format) = try ModelFile.open(path)
        return try view(source, format: format)
    }

    /// The sgm view of an already opened source: the one place any layout becomes sgm names. `lenient` keeps
    /// tensors that have no sgm name under their own names (detection then reports them) instead of throwing.
    public static func view(_ source: TensorSource, format: ModelFile.Format, lenient: Bool = false) throws -> SGMView {
        let path = source.path
        let layout = StoredLayout.detect(source.names)
        guard let (flat, flatLayout) = layout.flattened(source), flatLayout != .sgm || layout == .ldmVAE else {
            return SGMView(source: source, original: source, format: format, layout: layout)
        }
        if flatLayout == .sgm { return SGMView(source: flat, original: source, format: format, layout: layout) }
        let converted: ConvertedSource
        do { converted = try LayoutConverter().convert(source: flat, from: .diffusers, to: .sgm) } catch {
            if lenient { return SGMView(source: source, original: source, format: format, layout: layout) }
            throw error
        }
        if !converted.unmapped.isEmpty {
            if lenient {
                let unmapped = Set(converted.unmapped.map(\.name))
                let kept = flat.tensors.filter { unmapped.contains($0.name) }.map(\.name)
                return SGMView(source: MergedNames(converted, extra: flat, names: kept), original: source, format: format, layout: layout)
            }
            throw FormatError.malformed(path: path, reason: "\(converted.unmapped.count) tensors have no sgm name, e.g. \(converted.unmapped[0])")
        }
        return SGMView(source: converted, original: source, format: format, layout: layout)
    }

    /// The diffusers `config.json` of a component when the model is a diffusers folder.
    public func diffusersConfig(_ component: ModelComponent) -> JSONValue? {
        (original as? DiffusersFolder)?.config(for: component)
    }
}

/// The converted tensors plus some tensors of another source under their own names (the sgm view of a file
/// with names no key map knows, for detection to report them).
final class MergedNames: TensorSource, @unchecked Sendable {
    let primary: TensorSource
    let extra: TensorSource
    let extraNames: Set<String>
    let tensors: [TensorInfo]
    var path: String { primary.path }
    var metadata: [String: String] { primary.metadata }

    init(_ primary: TensorSource, extra: TensorSource, names: [String]) {
        self.primary = primary
        self.extra = extra
        let kept = Set(names)
        extraNames = kept
        tensors = primary.tensors + extra.tensors.filter { kept.contains($0.name) }
    }

    func tensor(_ name: String) throws -> TensorData {
        extraNames.contains(name) ? try extra.tensor(name) : try primary.tensor(name)
    }
}
