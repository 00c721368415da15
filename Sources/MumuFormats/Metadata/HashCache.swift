import Foundation

/// Remembers file hashes by path + size + mtime + inode, so a second look at the same file is free.
/// Stored as JSON in `$XDG_CACHE_HOME/mumu/hashes.json` (default `~/.cache/mumu`), or `$MUMU_CACHE_DIR`.
public final class HashCache: @unchecked Sendable {
    struct Entry: Codable {
        var identity: FileIdentity
        var hashes: FileHashes
    }

    public let path: String
    private var entries: [String: Entry] = [:]
    private let lock = Mutex()

    public static let shared = HashCache(directory: defaultDirectory())

    public static func defaultDirectory() -> String {
        let env = ProcessInfo.processInfo.environment
        if let d = env["MUMU_CACHE_DIR"], !d.isEmpty { return d }
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return x + "/mumu" }
        return (env["HOME"] ?? "/tmp") + "/.cache/mumu"
    }

    public init(directory: String) {
        path = directory + "/hashes.json"
        if let data = FileManager.default.contents(atPath: path),
           let decoded = try? JSONDecoder().decode([String: Entry].self, from: data) {
            entries = decoded
        }
    }

    private static func key(_ file: String) -> String {
        URL(fileURLWithPath: file).resolvingSymlinksInPath().path
    }

    public func lookup(_ file: String) -> FileHashes? {
        guard let id = FileIdentity(path: file) else { return nil }
        return lock.locked { entries[Self.key(file)].flatMap { $0.identity == id ? $0.hashes : nil } }
    }

    /// Records hashes and saves the cache (atomically; failures to save are not errors).
    public func store(_ file: String, _ hashes: FileHashes) {
        guard let id = FileIdentity(path: file) else { return }
        lock.locked {
            // Re-read so concurrent mumu processes do not drop each other's entries.
            if let data = FileManager.default.contents(atPath: path),
               let decoded = try? JSONDecoder().decode([String: Entry].self, from: data) {
                entries.merge(decoded) { mine, _ in mine }
            }
            entries[Self.key(file)] = Entry(identity: id, hashes: hashes)
            let dir = (path as NSString).deletingLastPathComponent
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if let data = try? JSONEncoder().encode(entries) {
                try? data.write(to: URL(fileURLWithPath: path), options: .atomic)
            }
        }
    }

    /// Hashes of a file: from the cache when the file is unchanged, else computed and stored. For a safetensors
    /// file these include the data-only SHA-256 (AutoV3, ModelSpec's hash), computed beside the whole file's in the
    /// same pass; an entry `wholeFileHashes` left without it is completed.
    public func hashes(of file: String) throws -> FileHashes {
        let cached = lookup(file)
        if let cached, cached.dataSHA256 != nil { return cached }
        let mapped = try MappedFile(path: file)
        var dataStart: Int?
        if let header = try? SafetensorsHeader.parse(mapped.all, path: file) { dataStart = header.dataStart }
        if dataStart == nil, let cached { return cached }   // not safetensors: nothing more to hash
        let h = try Hashing.hashes(of: mapped, dataStart: dataStart)
        store(file, h)
        return h
    }

    /// The whole-file hashes only (SHA-256, AutoV1/V2: what A1111 and a merge's metadata name a checkpoint by),
    /// from the cache, else one SHA-256 pass over the file: half the work of `hashes(of:)` on a safetensors file,
    /// whose data-only hash is left for when something asks for it.
    public func wholeFileHashes(of file: String) throws -> FileHashes {
        if let cached = lookup(file) { return cached }
        let h = try Hashing.hashes(of: try MappedFile(path: file), dataStart: nil)
        store(file, h)
        return h
    }
}
