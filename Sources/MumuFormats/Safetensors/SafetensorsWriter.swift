import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import MumuTensor

/// Streams a safetensors file: the header is computed from the declared tensors first, then each
/// tensor is written at its place as it is produced (in any order, from any thread), so writing a
/// 7 GB file holds no more than the tensors in flight. The layout is the reference writer's: tensors
/// ordered by descending dtype (so each is naturally aligned) then by name, the header padded with
/// spaces to a multiple of 8. The file appears at `path` only when `finish()` succeeds.
public final class SafetensorsWriter: ModelSink, @unchecked Sendable {
    public let path: String
    public let layout: Layout
    private let out: AtomicFile
    private let lock = Mutex()
    /// Bytes written so far, per tensor (parts may arrive in any order).
    private var written: [Int]
    /// Bytes that have reached the file, per tensor (for hashing behind the writers).
    private var landed: [Int]
    private let index: [String: Int]
    private var hasher: DataHasher?

    /// Where each tensor goes, and the header bytes.
    public struct Layout: Sendable {
        /// Entries in data order.
        public var entries: [SafetensorsHeader.Entry]
        /// The 8-byte length followed by the padded JSON header.
        public var prefix: [UInt8]
        public var totalSize: Int { prefix.count + (entries.last?.range.upperBound ?? 0) }
    }

    /// The reference's `Dtype` enum order (safetensors/src/tensor.rs), which is not `DType.allCases`'
    /// (BOOL comes first there, before the sub-byte floats).
    static let referenceDTypeOrder: [DType] = [.bool, .f4, .f6e2m3, .f6e3m2, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0,
                                               .f8e4m3fnuz, .f8e5m2fnuz, .i16, .u16, .f16, .bf16, .i32, .u32, .f32,
                                               .c64, .f64, .i64, .u64]

    /// The reference writer's order: dtype descending (in the safetensors enum order), then name by bytes.
    public static func order(_ tensors: [TensorInfo]) -> [TensorInfo] {
        let rank = Dictionary(uniqueKeysWithValues: referenceDTypeOrder.enumerated().map { ($1, $0) })
        return tensors.sorted { a, b in
            let ra = rank[a.dtype]!, rb = rank[b.dtype]!
            if ra != rb { return ra > rb }
            return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
        }
    }

    public static func layout(_ tensors: [TensorInfo], metadata: [String: String]) throws -> Layout {
        var seen = Set<String>()
        for t in tensors {
            guard seen.insert(t.name).inserted else { throw FormatError.unsupported("tensor '\(t.name)' is declared twice") }
            guard t.name != "__metadata__", !t.name.utf8.contains(0), !t.name.isEmpty else {
                throw FormatError.unsupported("'\(t.name)' cannot be a tensor name in a safetensors file")
            }
            guard let numel = elementCount(t.shape), t.dtype.byteCount(elements: numel) != nil else {
                throw FormatError.unsupported("tensor '\(t.name)': shape \(t.shape) of \(t.dtype.rawValue) is not a valid size")
            }
        }
        var entries: [SafetensorsHeader.Entry] = []
        var offset = 0
        var json = "{"
        var empty = true   // (String.count is linear: testing json.count per tensor made this quadratic)
        if !metadata.isEmpty {
            empty = false
            let members = metadata.keys.sorted().map { JSONWriter.quote($0) + ":" + JSONWriter.quote(metadata[$0]!) }
            json += "\"__metadata__\":{" + members.joined(separator: ",") + "}"
        }
        for t in order(tensors) {
            let size = t.byteCount
            entries.append(.init(info: t, range: offset..<(offset + size)))
            if !empty { json += "," }
            empty = false
            json += JSONWriter.quote(t.name) + ":{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":["
                + t.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(offset + size)]}"
            offset += size
        }
        json += "}"
        var header = Array(json.utf8)
        header.append(contentsOf: repeatElement(0x20, count: (8 - header.count % 8) % 8))
        guard header.count <= SafetensorsHeader.maxHeaderLength else {
            throw FormatError.unsupported("the header would be \(header.count) bytes, over safetensors' 100,000,000-byte limit")
        }
        var prefix = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
        prefix.append(contentsOf: header)
        return Layout(entries: entries, prefix: prefix)
    }

    public init(path: String, tensors: [TensorInfo], metadata: [String: String] = [:], overwrite: Bool = false) throws {
        self.path = path
        layout = try Self.layout(tensors, metadata: metadata)
        out = try AtomicFile(path: path, overwrite: overwrite)
        written = Array(repeating: 0, count: layout.entries.count)
        landed = written
        index = Dictionary(uniqueKeysWithValues: layout.entries.enumerated().map { ($1.info.name, $0) })
        try out.reserve(layout.totalSize)
        try layout.prefix.withUnsafeBytes { try out.write($0, at: 0) }
    }

    /// The tensors in the order they sit in the file (writing in this order is sequential I/O).
    public var tensors: [TensorInfo] { layout.entries.map(\.info) }

    /// Writes one declared tensor's bytes (exactly its declared size).
    public func write(_ name: String, _ bytes: UnsafeRawBufferPointer) throws {
        guard let i = index[name] else { throw FormatError.unsupported("\(path): tensor '\(name)' was not declared") }
        guard bytes.count == layout.entries[i].range.count else {
            throw FormatError.badTensor(path: path, tensor: name, reason: "got \(bytes.count) bytes, declared \(layout.entries[i].range.count)")
        }
        try writePart(name, offset: 0, bytes)
    }

    /// Writes `bytes` at byte `offset` inside a declared tensor: large tensors stream in parts.
    public func writePart(_ name: String, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        guard let i = index[name] else { throw FormatError.unsupported("\(path): tensor '\(name)' was not declared") }
        let e = layout.entries[i]
        guard offset >= 0, offset + bytes.count <= e.range.count else {
            throw FormatError.badTensor(path: path, tensor: name, reason: "part [\(offset), \(offset + bytes.count)) lies outside its \(e.range.count) bytes")
        }
        try lock.locked {
            guard written[i] + bytes.count <= e.range.count else {
                throw FormatError.badTensor(path: path, tensor: name, reason: "written twice")
            }
            written[i] += bytes.count
        }
        if bytes.count > 0 { try out.write(bytes, at: layout.prefix.count + e.range.lowerBound + offset) }
        if let hasher {
            let complete = lock.locked { landed[i] += bytes.count; return landed[i] == e.range.count }
            if complete { hasher.signal.signal() }
        }
    }

    /// Hashes the tensor bytes on a thread of its own while they are being written, in file order, as
    /// each tensor completes (writers that go roughly in file order keep it close behind). Call before
    /// writing; `finish(fillingDataHashInto:)` then only waits for the tail instead of reading it all back.
    public func hashDataWhileWriting() {
        guard hasher == nil else { return }
        let h = DataHasher()
        hasher = h
        let entries = layout.entries, start = layout.prefix.count, fd = out.fd, tmp = out.temporaryPath
        h.group.enter()
        DispatchQueue.global().async { [self] in
            defer { h.group.leave() }
            var sha = SHA256()
            let chunk = 8 << 20
            let buffer = OwnedBuffer(byteCount: chunk)
            for (i, e) in entries.enumerated() {
                while lock.locked({ landed[i] }) != e.range.count {
                    if h.cancelled { return }
                    h.signal.wait()
                }
                var offset = start + e.range.lowerBound
                let end = start + e.range.upperBound
                while offset < end {
                    let n = min(chunk, end - offset)
                    var done = 0
                    while done < n {
                        let r = pread(fd, buffer.pointer + done, n - done, off_t(offset + done))
                        if r < 0 && errno == EINTR { continue }
                        guard r > 0 else { h.failure = FormatError.io(path: tmp, reason: "cannot read back the written data"); return }
                        done += r
                    }
                    sha.update(UnsafeRawBufferPointer(start: buffer.pointer, count: n))
                    offset += n
                }
            }
            h.digest = sha.hexDigest()
        }
    }

    /// Writes a tensor, converting it to the declared dtype when they differ.
    public func write(_ data: TensorData) throws {
        guard let i = index[data.info.name] else { throw FormatError.unsupported("\(path): tensor '\(data.info.name)' was not declared") }
        let declared = layout.entries[i].info
        // Both values are kept alive across the write: `bytes` is only valid while its owner is (an optimized
        // build may release a temporary right after its last use).
        let converted = declared.dtype == data.info.dtype ? data : try data.converted(to: declared.dtype)
        try withExtendedLifetime((data, converted)) { try write(data.info.name, converted.bytes) }
    }

    /// Checks every declared tensor was written, then moves the file into place.
    public func finish() throws {
        if let h = hasher { h.cancelled = true; h.signal.signal(); h.group.wait() }
        if let missing = layout.entries.indices.first(where: { written[$0] != layout.entries[$0].range.count }) {
            out.abort()
            throw FormatError.badTensor(path: path, tensor: layout.entries[missing].info.name, reason: "declared but never written")
        }
        try out.commit()
    }

    /// The placeholder a metadata value is declared with when `finish(fillingDataHashInto:)` will fill it:
    /// "0x" and 64 zeros, the length of a ModelSpec `hash_sha256`.
    public static let dataHashPlaceholder = "0x" + String(repeating: "0", count: 64)

    /// Like `finish()`, but first hashes the tensor bytes (SHA-256 of everything after the header, read
    /// back from the file) and writes "0x" + the digest over the placeholder value of metadata `key`,
    /// which must have been declared as `dataHashPlaceholder`. Returns the digest (hex).
    ///
    /// `replacingMetadata`: metadata known only once the data is written (a merge's input hashes, computed while
    /// it runs) replaces the header's first. The new header (same tensors) must not be longer than the one
    /// written first; it is padded with spaces to that length, so no tensor moves.
    @discardableResult
    public func finish(fillingDataHashInto key: String, replacingMetadata metadata: [String: String]? = nil) throws -> String {
        if let missing = layout.entries.indices.first(where: { written[$0] != layout.entries[$0].range.count }) {
            abort()
            throw FormatError.badTensor(path: path, tensor: layout.entries[missing].info.name, reason: "declared but never written")
        }
        do {
            var prefix = layout.prefix
            if let metadata {
                prefix = try Self.layout(tensors, metadata: metadata).prefix
                guard prefix.count <= layout.prefix.count else {
                    throw FormatError.unsupported("\(path): the final metadata needs a \(prefix.count)-byte header, "
                                                  + "more than the \(layout.prefix.count) bytes written first")
                }
                prefix.append(contentsOf: repeatElement(0x20, count: layout.prefix.count - prefix.count))
                withUnsafeBytes(of: UInt64(layout.prefix.count - 8).littleEndian) { prefix.replaceSubrange(0..<8, with: $0) }
                try prefix.withUnsafeBytes { try out.write($0, at: 0) }
            }
            let needle = Array("\"\(key)\":\"\(Self.dataHashPlaceholder)\"".utf8)
            guard let at = prefix.firstRange(of: needle) else {
                throw FormatError.unsupported("\(path): metadata '\(key)' was not declared with the hash placeholder")
            }
            // One hashing path: the background hasher, started now if the caller did not start it while
            // writing (every tensor has landed, so it reads the data straight through).
            if hasher == nil {
                lock.locked { landed = written }
                hashDataWhileWriting()
            }
            let h = hasher!
            h.signal.signal()
            h.group.wait()
            if let failure = h.failure { throw failure }
            guard let digest = h.digest else { throw FormatError.io(path: out.temporaryPath, reason: "data hashing stopped") }
            let value = Array("\"\(key)\":\"0x\(digest)\"".utf8)
            try value.withUnsafeBytes { try out.write($0, at: at.lowerBound) }
            try out.commit()
            return digest
        } catch {
            abort()
            throw error
        }
    }

    /// Abandons the file: nothing appears at `path`.
    public func abort() {
        if let h = hasher {
            h.cancelled = true
            h.signal.signal()
            h.group.wait()
        }
        out.abort()
    }
}

/// State of a writer's background data hash.
final class DataHasher: @unchecked Sendable {
    let signal = DispatchSemaphore(value: 0)
    let group = DispatchGroup()
    var cancelled = false
    var digest: String?
    var failure: Error?
}
