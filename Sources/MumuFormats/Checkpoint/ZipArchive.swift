/// A minimal, read-only ZIP reader over a memory-mapped file: just enough for the archives that
/// `torch.save` writes (stored entries, 64-byte aligned, ZIP64 end records).
///
/// Every offset and length read from the file is checked against the file size with
/// overflow-safe arithmetic before it is used, so a corrupt or truncated archive gives
/// `FormatError.malformed`, never a crash, a hang or an allocation larger than the file.
/// Only stored (uncompressed) entries can be read, and they are read zero-copy.
public final class ZipArchive: @unchecked Sendable {
    /// One entry of the central directory.
    public struct Entry: Sendable, Equatable {
        public var name: String
        /// Compression method: 0 = stored, 8 = deflate, ...
        public var method: UInt16
        /// General-purpose flags (bit 0: encrypted; bit 3: sizes in a data descriptor).
        public var flags: UInt16
        public var compressedSize: Int
        public var uncompressedSize: Int
        /// Offset of the entry's local header in the file.
        public var localHeaderOffset: Int

        public var isStored: Bool { method == 0 }
        public var isEncrypted: Bool { flags & 1 != 0 }
    }

    public let file: MappedFile
    public var path: String { file.path }
    /// Entries in central-directory order.
    public let entries: [Entry]
    private let indexByName: [String: Int]

    /// Opens the archive at `path` (memory-mapped).
    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        let reader = ZipBytes(file: file)
        let directory = try Self.findCentralDirectory(reader)
        let entries = try Self.readCentralDirectory(reader, directory)
        var index: [String: Int] = [:]
        index.reserveCapacity(entries.count)
        for (i, entry) in entries.enumerated() {
            if index[entry.name] != nil {
                throw reader.malformed("the zip lists the entry '\(entry.name)' twice")
            }
            index[entry.name] = i
        }
        self.entries = entries
        self.indexByName = index
    }

    /// The entry with that exact name, if any.
    public func entry(named name: String) -> Entry? {
        guard let i = indexByName[name] else { return nil }
        return entries[i]
    }

    /// The byte range in the file of a stored entry's data (checked against the file size).
    /// A compressed or encrypted entry throws, naming the entry.
    public func dataRange(of entry: Entry) throws -> Range<Int> {
        let reader = ZipBytes(file: file)
        if entry.isEncrypted {
            throw reader.malformed("zip entry '\(entry.name)' is encrypted; mumu cannot read encrypted archives")
        }
        guard entry.isStored else {
            throw reader.malformed("zip entry '\(entry.name)' is compressed (\(Self.methodName(entry.method))); mumu reads only stored (uncompressed) entries, as torch.save writes them: re-save the checkpoint with torch.save or convert it to .safetensors")
        }
        guard entry.compressedSize == entry.uncompressedSize else {
            throw reader.malformed("zip entry '\(entry.name)' is stored but its sizes disagree (\(entry.compressedSize) vs \(entry.uncompressedSize) bytes)")
        }
        let at = entry.localHeaderOffset
        guard try reader.u32(at, "local header of '\(entry.name)'") == 0x0403_4b50 else {
            throw reader.malformed("zip entry '\(entry.name)': no local header signature at byte \(at)")
        }
        let nameLength = Int(try reader.u16(at + 26, "local header of '\(entry.name)'"))
        let extraLength = Int(try reader.u16(at + 28, "local header of '\(entry.name)'"))
        guard let nameStart = reader.add(at, 30), let nameEnd = reader.add(nameStart, nameLength) else {
            throw reader.malformed("zip entry '\(entry.name)': local header at byte \(at) runs past the end of the file")
        }
        let localName = try reader.slice(nameStart, nameLength, "local header of '\(entry.name)'")
        guard Array(localName) == Array(entry.name.utf8) else {
            throw reader.malformed("zip entry '\(entry.name)': the local header at byte \(at) names another entry")
        }
        guard let dataStart = reader.add(nameEnd, extraLength),
              let dataEnd = reader.add(dataStart, entry.compressedSize), dataEnd <= file.size
        else {
            throw reader.malformed("zip entry '\(entry.name)': its data (\(entry.compressedSize) bytes after the local header at byte \(at)) runs past the end of the file (\(file.size) bytes)")
        }
        return dataStart..<dataEnd
    }

    /// The bytes of a stored entry, pointing into the mapping (valid while the archive lives).
    public func data(of entry: Entry) throws -> UnsafeRawBufferPointer {
        file.bytes(try dataRange(of: entry))
    }

    static func methodName(_ method: UInt16) -> String {
        switch method {
        case 8: return "deflate"
        case 9: return "deflate64"
        case 12: return "bzip2"
        case 14: return "lzma"
        case 93: return "zstd"
        case 95: return "xz"
        default: return "method \(method)"
        }
    }

    // MARK: - End of central directory

    struct Directory {
        var offset: Int
        var size: Int
        var count: Int
        /// Where the directory must end: the first end record.
        var limit: Int
    }

    private static let eocdSize = 22
    private static let maxCommentLength = 0xFFFF

    private static func findCentralDirectory(_ r: ZipBytes) throws -> Directory {
        let size = r.file.size
        guard size >= eocdSize else {
            throw r.malformed("not a zip archive: \(size) bytes is too short for an end-of-central-directory record (a torch .ckpt since PyTorch 1.6 is a zip)")
        }
        // The record is the last thing in the file, followed only by a comment of at most 64 KiB.
        let lowest = max(0, size - eocdSize - maxCommentLength)
        var eocd = -1
        var at = size - eocdSize
        let all = r.file.all
        while at >= lowest {
            if all[at] == 0x50, all[at + 1] == 0x4b, all[at + 2] == 0x05, all[at + 3] == 0x06 {
                let commentLength = Int(all[at + 20]) | Int(all[at + 21]) << 8
                if at + eocdSize + commentLength <= size { eocd = at; break }
            }
            at -= 1
        }
        guard eocd >= 0 else {
            throw r.malformed("not a zip archive, or a truncated one: no end-of-central-directory record in the last 64 KiB (a torch .ckpt since PyTorch 1.6 is a zip)")
        }
        let disk = try r.u16(eocd + 4, "end record")
        let cdDisk = try r.u16(eocd + 6, "end record")
        let diskCount = try r.u16(eocd + 8, "end record")
        var count = Int(try r.u16(eocd + 10, "end record"))
        var cdSize = Int(try r.u32(eocd + 12, "end record"))
        var cdOffset = Int(try r.u32(eocd + 16, "end record"))
        var limit = eocd

        // ZIP64: a locator right before the end record points at the ZIP64 end record.
        let locator = eocd - 20
        var hasLocator = false
        if locator >= 0 { hasLocator = try r.u32(locator, "ZIP64 locator") == 0x0706_4b50 }
        let needs64 = count == 0xFFFF || diskCount == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF
        if hasLocator {
            let recordDisk = try r.u32(locator + 4, "ZIP64 locator")
            let record64 = try r.u64(locator + 8, "ZIP64 locator")
            let totalDisks = try r.u32(locator + 16, "ZIP64 locator")
            guard recordDisk == 0, totalDisks <= 1 else {
                throw r.malformed("multi-disk (split) zip archives are not supported")
            }
            guard record64 <= UInt64(locator), let at64 = Int(exactly: record64), at64 + 56 <= locator else {
                throw r.malformed("the ZIP64 locator points at byte \(record64), outside the archive")
            }
            guard try r.u32(at64, "ZIP64 end record") == 0x0606_4b50 else {
                throw r.malformed("no ZIP64 end-of-central-directory record at byte \(at64)")
            }
            let disk64 = try r.u32(at64 + 16, "ZIP64 end record")
            let cdDisk64 = try r.u32(at64 + 20, "ZIP64 end record")
            guard disk64 == 0, cdDisk64 == 0 else {
                throw r.malformed("multi-disk (split) zip archives are not supported")
            }
            count = try r.int64(at64 + 32, "ZIP64 end record (entry count)")
            cdSize = try r.int64(at64 + 40, "ZIP64 end record (directory size)")
            cdOffset = try r.int64(at64 + 48, "ZIP64 end record (directory offset)")
            limit = at64
        } else if needs64 {
            throw r.malformed("the end record asks for ZIP64 values but there is no ZIP64 locator (truncated or corrupt archive)")
        } else {
            guard disk == 0, cdDisk == 0 else {
                throw r.malformed("multi-disk (split) zip archives are not supported")
            }
        }
        guard let cdEnd = r.add(cdOffset, cdSize), cdEnd <= limit else {
            throw r.malformed("the central directory (\(cdSize) bytes at byte \(cdOffset)) runs past the end records at byte \(limit) (truncated or corrupt archive)")
        }
        // Each directory entry takes at least 46 bytes: a count beyond that is a lie.
        guard count <= cdSize / 46 else {
            throw r.malformed("the end record claims \(count) entries, more than a \(cdSize)-byte central directory can hold")
        }
        return Directory(offset: cdOffset, size: cdSize, count: count, limit: limit)
    }

    // MARK: - Central directory

    private static func readCentralDirectory(_ r: ZipBytes, _ d: Directory) throws -> [Entry] {
        var entries: [Entry] = []
        entries.reserveCapacity(d.count)
        var at = d.offset
        let end = d.offset + d.size
        for i in 0..<d.count {
            let what = "central directory entry \(i)"
            guard let fixedEnd = r.add(at, 46), fixedEnd <= end else {
                throw r.malformed("\(what) at byte \(at) runs past the end of the central directory")
            }
            guard try r.u32(at, what) == 0x0201_4b50 else {
                throw r.malformed("\(what): no signature at byte \(at) (corrupt archive)")
            }
            let flags = try r.u16(at + 8, what)
            let method = try r.u16(at + 10, what)
            var compressed = Int(try r.u32(at + 20, what))
            var uncompressed = Int(try r.u32(at + 24, what))
            let nameLength = Int(try r.u16(at + 28, what))
            let extraLength = Int(try r.u16(at + 30, what))
            let commentLength = Int(try r.u16(at + 32, what))
            let diskStart = Int(try r.u16(at + 34, what))
            var localOffset = Int(try r.u32(at + 42, what))
            let nameStart = fixedEnd
            guard let extraStart = r.add(nameStart, nameLength),
                  let commentStart = r.add(extraStart, extraLength),
                  let next = r.add(commentStart, commentLength), next <= end
            else {
                throw r.malformed("\(what) at byte \(at): its name and extra fields run past the end of the central directory")
            }
            let name = String(decoding: try r.slice(nameStart, nameLength, what), as: UTF8.self)

            // ZIP64 extended information (id 1): present, in this order, only for the fields
            // whose 32-bit value is saturated.
            if uncompressed == 0xFFFF_FFFF || compressed == 0xFFFF_FFFF || localOffset == 0xFFFF_FFFF {
                var values: [Int] = []
                var field = extraStart
                var found = false
                while let headerEnd = r.add(field, 4), headerEnd <= commentStart {
                    let id = try r.u16(field, what)
                    let length = Int(try r.u16(field + 2, what))
                    guard let fieldEnd = r.add(headerEnd, length), fieldEnd <= commentStart else {
                        throw r.malformed("zip entry '\(name)': an extra field runs past its entry")
                    }
                    if id == 1 {
                        var p = headerEnd
                        while p + 8 <= fieldEnd {
                            values.append(try r.int64(p, "ZIP64 extra field of '\(name)'"))
                            p += 8
                        }
                        found = true
                        break
                    }
                    field = fieldEnd
                }
                guard found else {
                    throw r.malformed("zip entry '\(name)': 32-bit sizes are saturated but there is no ZIP64 extra field")
                }
                var k = 0
                func take(_ field: String) throws -> Int {
                    guard k < values.count else {
                        throw r.malformed("zip entry '\(name)': the ZIP64 extra field lacks the \(field)")
                    }
                    defer { k += 1 }
                    return values[k]
                }
                if uncompressed == 0xFFFF_FFFF { uncompressed = try take("uncompressed size") }
                if compressed == 0xFFFF_FFFF { compressed = try take("compressed size") }
                if localOffset == 0xFFFF_FFFF { localOffset = try take("local header offset") }
            }
            guard diskStart == 0 || diskStart == 0xFFFF else {
                throw r.malformed("zip entry '\(name)' lies on disk \(diskStart): split archives are not supported")
            }
            guard localOffset < d.offset, let dataEnd = r.add(localOffset, compressed), dataEnd <= d.offset else {
                throw r.malformed("zip entry '\(name)': its data (\(compressed) bytes from byte \(localOffset)) overlaps the central directory or runs past the end of the file")
            }
            entries.append(Entry(name: name, method: method, flags: flags, compressedSize: compressed,
                                 uncompressedSize: uncompressed, localHeaderOffset: localOffset))
            at = next
        }
        return entries
    }
}

/// Bounds-checked little-endian reads from a mapped file. Every read checks its range first,
/// so nothing here can read outside the mapping (the release build has no runtime checks).
struct ZipBytes {
    let file: MappedFile

    func malformed(_ reason: String) -> FormatError { .malformed(path: file.path, reason: reason) }

    /// `a + b` when both are non-negative and the sum does not overflow.
    func add(_ a: Int, _ b: Int) -> Int? {
        guard a >= 0, b >= 0 else { return nil }
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : sum
    }

    func slice(_ at: Int, _ count: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        guard let end = add(at, count), end <= file.size else {
            throw malformed("\(what): \(count) bytes at byte \(at) run past the end of the file (\(file.size) bytes; truncated archive?)")
        }
        return file.bytes(at..<end)
    }

    func u16(_ at: Int, _ what: String) throws -> UInt16 {
        let b = try slice(at, 2, what)
        return UInt16(b[0]) | UInt16(b[1]) << 8
    }

    func u32(_ at: Int, _ what: String) throws -> UInt32 {
        let b = try slice(at, 4, what)
        var v: UInt32 = 0
        for i in (0..<4).reversed() { v = v << 8 | UInt32(b[i]) }
        return v
    }

    func u64(_ at: Int, _ what: String) throws -> UInt64 {
        let b = try slice(at, 8, what)
        var v: UInt64 = 0
        for i in (0..<8).reversed() { v = v << 8 | UInt64(b[i]) }
        return v
    }

    /// A 64-bit size or offset, which must fit in the file.
    func int64(_ at: Int, _ what: String) throws -> Int {
        let v = try u64(at, what)
        guard v <= UInt64(file.size) else {
            throw malformed("\(what): value \(v) is larger than the file (\(file.size) bytes)")
        }
        return Int(v)
    }
}
