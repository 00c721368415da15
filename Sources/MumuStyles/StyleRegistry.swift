import Foundation
import MumuFormats

/// The style registry on disk:
/// ```
/// HOME/styles/NAME.json        one manifest a style
/// HOME/blobs/sha256/HEX        content-addressed blobs (checkpoints, deltas, LoRAs, recipes, previews)
/// HOME/tmp/                    blobs and manifests being written (renamed into place when complete)
/// HOME/lock                    flock(2): one writer at a time; readers never wait
/// ```
/// A style appears when its manifest is renamed into place, after all its blobs are: a crash leaves at
/// most unreferenced blobs (`gc` removes them), never a half-registered style.
public final class StyleRegistry: @unchecked Sendable {
    public let home: String
    public var stylesDir: String { home + "/styles" }
    public var blobsDir: String { home + "/blobs/sha256" }
    public var tmpDir: String { home + "/tmp" }

    /// `$MUMU_HOME`, else `$XDG_DATA_HOME/mumu`, else `~/.local/share/mumu`.
    public static func defaultHome(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let h = environment["MUMU_HOME"], !h.isEmpty { return h }
        if let x = environment["XDG_DATA_HOME"], !x.isEmpty { return x + "/mumu" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.local/share/mumu"
    }

    /// Opens the registry at `home`; with `create` false (commands that only read: list, show, verify) nothing is
    /// created, and a registry that does not exist reads as empty.
    public init(home: String? = nil, create: Bool = true) throws {
        // Absolute, so blob paths stay valid for code that resolves paths against another folder (recipes).
        self.home = URL(fileURLWithPath: home ?? StyleRegistry.defaultHome()).standardized.path
        guard create else { return }
        for dir in [stylesDir, blobsDir, tmpDir] {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw StyleError.invalid("cannot create the registry at \(self.home): \(error.localizedDescription)")
            }
        }
    }

    // MARK: reading

    public func manifestPath(_ name: String) -> String { stylesDir + "/" + StyleManifest.normalizedName(name) + ".json" }
    public func blobPath(_ sha256: String) -> String { blobsDir + "/" + sha256 }

    /// Every style, sorted by name. Manifests that cannot be read are returned in `problems`.
    public func list() -> (styles: [StyleManifest], problems: [String]) {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: stylesDir)) ?? []
        var styles: [StyleManifest] = []
        var problems: [String] = []
        for f in files where f.hasSuffix(".json") {
            let path = stylesDir + "/" + f
            do {
                guard let data = FileManager.default.contents(atPath: path) else { throw StyleError.corrupt(path, "unreadable") }
                styles.append(try StyleManifest.decode(data, path: path))
            } catch { problems.append("\(error)") }
        }
        return (styles.sorted { $0.name < $1.name }, problems)
    }

    public func manifest(_ name: String) throws -> StyleManifest {
        let name = StyleManifest.normalizedName(name)
        guard StyleManifest.validName(name) else { throw StyleError.badName(name) }
        let path = manifestPath(name)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StyleError.notFound(name, suggestions: suggestions(for: name))
        }
        return try StyleManifest.decode(data, path: path)
    }

    /// Up to three registered names closest to `name` (edit distance), for "did you mean".
    public func suggestions(for name: String) -> [String] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: stylesDir)) ?? [])
            .filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }
        let scored = names.map { ($0, editDistance($0.lowercased(), name.lowercased())) }
        let limit = max(2, name.count / 2)
        return scored.filter { $0.1 <= limit || $0.0.lowercased().contains(name.lowercased()) }
            .sorted { ($0.1, $0.0) < ($1.1, $1.0) }.prefix(3).map(\.0)
    }

    // MARK: writing

    /// Runs `body` holding the registry's write lock (flock), so concurrent `styles add` never interleave.
    public func withLock<T>(_ body: () throws -> T) throws -> T {
        let fd = open(home + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StyleError.invalid("\(home)/lock: cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw StyleError.invalid("\(home)/lock: cannot lock: \(String(cString: strerror(errno)))") }
        }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    /// Copies a file into the blob store, hashing while copying; returns its SHA-256 and size.
    /// The blob appears under its hash only when complete (temporary file, fsync, rename).
    public func storeBlob(copying path: String, progress: ((WorkProgress) -> Void)? = nil) throws -> (sha256: String, size: Int) {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw StyleError.invalid("\(path): cannot read: \(String(cString: strerror(errno)))") }
        defer { close(input) }
        let tmp = tmpDir + "/blob-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let output = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw StyleError.invalid("\(tmp): cannot create: \(String(cString: strerror(errno)))") }
        var committed = false
        defer { if !committed { close(output); unlink(tmp) } }
        var hasher = SHA256()
        let chunk = 8 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        var size = 0
        var st = stat()
        let total = fstat(input, &st) == 0 ? Int(st.st_size) : 0
        progress?(WorkProgress(done: 0, total: total, unit: .bytes))
        while true {
            let n = read(input, buffer, chunk)
            if n < 0 { if errno == EINTR { continue }; throw StyleError.invalid("\(path): read failed: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(start: buffer, count: n))
            var done = 0
            while done < n {
                let w = write(output, buffer + done, n - done)
                if w < 0 { if errno == EINTR { continue }; throw StyleError.invalid("\(tmp): write failed: \(String(cString: strerror(errno)))") }
                done += w
            }
            size += n
            progress?(WorkProgress(done: size, total: max(total, size), unit: .bytes))
        }
        let digest = hasher.hexDigest()
        guard fsync(output) == 0 else { throw StyleError.invalid("\(tmp): fsync failed") }
        close(output)
        committed = true
        let dest = blobPath(digest)
        if FileManager.default.fileExists(atPath: dest) { unlink(tmp) } else if rename(tmp, dest) != 0 {
            unlink(tmp)
            throw StyleError.invalid("\(dest): cannot store blob: \(String(cString: strerror(errno)))")
        }
        return (digest, size)
    }

    /// Stores bytes as a blob.
    public func storeBlob(bytes: Data) throws -> (sha256: String, size: Int) {
        let tmp = tmpDir + "/bytes-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard FileManager.default.createFile(atPath: tmp, contents: bytes) else { throw StyleError.invalid("\(tmp): cannot write") }
        defer { unlink(tmp) }
        return try storeBlob(copying: tmp)
    }

    /// A temporary path inside the registry (same file system as the blobs, so renames are atomic).
    public func temporaryPath(_ suffix: String) -> String {
        tmpDir + "/work-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" + suffix
    }

    /// Moves a finished file into the blob store under its hash.
    public func adoptBlob(_ path: String) throws -> (sha256: String, size: Int) {
        let h = try HashCache(directory: tmpDir + "/.hashes").hashes(of: path)
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
        let dest = blobPath(h.sha256)
        if FileManager.default.fileExists(atPath: dest) { unlink(path) } else if rename(path, dest) != 0 {
            throw StyleError.invalid("\(dest): cannot store blob: \(String(cString: strerror(errno)))")
        }
        return (h.sha256, size)
    }

    /// Writes a manifest atomically (under the lock). Refuses to replace an existing style unless `replace`.
    public func register(_ manifest: StyleManifest, replace: Bool) throws {
        var manifest = manifest
        manifest.size = manifest.blobs.filter { $0.reference == nil }.reduce(0) { $0 + $1.size }
        guard StyleManifest.validName(manifest.name) else { throw StyleError.badName(manifest.name) }
        let dest = manifestPath(manifest.name)
        if !replace && FileManager.default.fileExists(atPath: dest) { throw StyleError.exists(manifest.name) }
        for b in manifest.blobs where b.reference == nil && !FileManager.default.fileExists(atPath: blobPath(b.sha256)) {
            throw StyleError.invalid("style '\(manifest.name)': blob \(b.sha256.prefix(12))… (\(b.role)) is not in the store")
        }
        let tmp = temporaryPath(".json")
        guard FileManager.default.createFile(atPath: tmp, contents: try manifest.encoded()) else {
            throw StyleError.invalid("\(tmp): cannot write the manifest")
        }
        let fd = open(tmp, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        guard rename(tmp, dest) == 0 else {
            unlink(tmp)
            throw StyleError.invalid("\(dest): cannot register: \(String(cString: strerror(errno)))")
        }
    }

    /// Removes a style; returns the styles that name it as their base (a full style other styles were added
    /// against), which the caller warns about: lossless deltas among them cannot be used without that base.
    @discardableResult
    public func remove(_ name: String) throws -> [String] {
        let m = try manifest(name)
        guard unlink(manifestPath(name)) == 0 else { throw StyleError.invalid("style '\(name)': cannot remove its manifest \(manifestPath(name))") }
        return dependents(of: m)
    }

    /// The styles whose base is `m` (by the hash of its weights, or by name).
    public func dependents(of m: StyleManifest) -> [String] {
        guard m.kind == .full, let weights = m.blob("weights") else { return [] }
        return list().styles.filter { $0.name != m.name && ($0.base?.sha256 == weights.sha256 || $0.base?.name == m.name) }.map(\.name)
    }

    /// Re-hashes the blobs of the named styles (all when nil): returns one line per problem found
    /// (missing or corrupted blobs, unreadable manifests, orphan blobs, moved referenced files).
    public func verify(_ names: [String]? = nil) throws -> (checked: Int, problems: [String], orphans: [String]) {
        let (all, problems0) = list()
        var problems = names == nil ? problems0 : []
        let chosen = try names.map { try $0.map { try manifest($0) } } ?? all
        var checked = 0
        for style in chosen {
            for b in style.blobs {
                let path = b.reference ?? blobPath(b.sha256)
                guard FileManager.default.fileExists(atPath: path) else {
                    problems.append("style '\(style.name)': \(b.role) blob \(b.sha256.prefix(12))… is missing (\(path))")
                    continue
                }
                let actual = try Hashing.hashes(of: try MappedFile(path: path), dataStart: nil).sha256
                checked += 1
                if actual != b.sha256 {
                    problems.append("style '\(style.name)': \(b.role) blob \(path) is corrupted: sha256 \(actual.prefix(12))…, expected \(b.sha256.prefix(12))…")
                }
            }
        }
        return (checked, problems, names == nil ? orphans(all) : [])
    }

    /// Blobs no manifest refers to.
    public func orphans(_ styles: [StyleManifest]? = nil) -> [String] {
        let used = Set((styles ?? list().styles).flatMap { $0.blobs.map(\.sha256) })
        let files = (try? FileManager.default.contentsOfDirectory(atPath: blobsDir)) ?? []
        return files.filter { !used.contains($0) }.sorted()
    }

    /// Removes orphan blobs and stale temporary files; returns what was freed.
    public func gc() throws -> (removed: Int, bytes: Int) {
        try withLock {
            var removed = 0, bytes = 0
            let (styles, problems) = list()
            guard problems.isEmpty else {
                throw StyleError.invalid("gc refused: some manifests cannot be read, their blobs might be collected:\n  " + problems.joined(separator: "\n  "))
            }
            for hash in orphans(styles) {
                let path = blobPath(hash)
                bytes += (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)??.intValue ?? 0
                if unlink(path) == 0 { removed += 1 }
            }
            for f in (try? FileManager.default.contentsOfDirectory(atPath: tmpDir)) ?? [] where !f.hasPrefix(".") {
                let path = tmpDir + "/" + f
                bytes += (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)??.intValue ?? 0
                try? FileManager.default.removeItem(atPath: path)
                removed += 1
            }
            return (removed, bytes)
        }
    }
}

/// Levenshtein distance, for name suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a.utf8), y = Array(b.utf8)
    if x.isEmpty { return y.count }
    if y.isEmpty { return x.count }
    var previous = Array(0...y.count)
    var current = Array(repeating: 0, count: y.count + 1)
    for i in 1...x.count {
        current[0] = i
        for j in 1...y.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[y.count]
}
