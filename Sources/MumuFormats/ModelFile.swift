/// Opens whatever a user points at: a safetensors file, one shard of a sharded set (the whole set
/// is opened), a `*.index.json`, a PyTorch `.ckpt` / `.pt` zip (read without executing pickle code),
/// or a diffusers folder. The format is decided by content, not by file name.
public enum ModelFile {
    public enum Format: String, Sendable {
        case safetensors, shardedSafetensors = "sharded-safetensors", ckpt, diffusers
    }

    public static func open(_ path: String) throws -> (source: TensorSource, format: Format) {
        guard fileExists(path) else { throw FormatError.io(path: path, reason: "no such file or folder") }
        if isDirectory(path) {
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
