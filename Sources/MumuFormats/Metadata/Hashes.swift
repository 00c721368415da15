import CMumuKernels
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// The hashes the ecosystem uses to identify model files (docs/formats.md, "Hashes"):
/// - SHA256 of the whole file; AutoV2 (A1111's "Model hash") is its first 10 hex digits;
/// - AutoV1 (A1111's legacy hash): SHA256 of the 64 KiB at offset 1 MiB, first 8 hex digits;
/// - for safetensors, SHA256 of the tensor data only (header excluded): ModelSpec's `hash_sha256`
///   ("0x" + all of it) and AutoV3 (Civitai, kohya `sshs_model_hash`: first 12 hex digits).
public struct FileHashes: Codable, Sendable, Equatable {
    public var sha256: String
    public var autoV1: String
    /// SHA256 of the bytes after the safetensors header; nil for other formats.
    public var dataSHA256: String?

    public init(sha256: String, autoV1: String, dataSHA256: String?) {
        self.sha256 = sha256
        self.autoV1 = autoV1
        self.dataSHA256 = dataSHA256
    }

    public var autoV2: String { String(sha256.prefix(10)) }
    public var autoV3: String? { dataSHA256.map { String($0.prefix(12)) } }
    public var modelspecHash: String? { dataSHA256.map { "0x" + $0 } }
}

public enum Hashing {
    /// Hex SHA256 of bytes in memory.
    public static func sha256(_ bytes: UnsafeRawBufferPointer) -> String {
        var h = SHA256()
        h.update(bytes)
        return h.hexDigest()
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in digest { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Computes every hash of a file in one pass over 64 MiB windows read with pread (one copy from the
    /// page cache, no page-table work, RSS stays small). For safetensors (when
    /// `dataStart` is given) the whole-file hash and the data-only hash run on two threads over the
    /// same window, so both cost one pass.
    public static func hashes(of file: MappedFile, dataStart: Int?) throws -> FileHashes {
        let all = file.all
        let v1Range = min(0x100000, all.count)..<min(0x110000, all.count)
        let autoV1 = String(sha256(UnsafeRawBufferPointer(rebasing: all[v1Range])).prefix(8))
        let dataStart = dataStart.map { min($0, all.count) }
        var whole = SHA256()
        var data = SHA256()
        let window = 64 << 20
        let buffer = OwnedBuffer(byteCount: min(window, max(all.count, 1)))
        var offset = 0
        while offset < all.count {
            let end = min(all.count, offset + window)
            try file.read(offset..<end, into: buffer.pointer)
            let chunk = UnsafeRawBufferPointer(start: buffer.pointer, count: end - offset)
            if let dataStart, dataStart < end {
                let from = max(dataStart, offset)
                let tail = UnsafeRawBufferPointer(rebasing: chunk[(from - offset)...])
                withUnsafeMutablePointer(to: &whole) { w in
                    withUnsafeMutablePointer(to: &data) { d in
                        let hashers = HasherPair(whole: w, data: d)
                        DispatchQueue.concurrentPerform(iterations: 2) { k in
                            if k == 0 { hashers.whole.pointee.update(chunk) } else { hashers.data.pointee.update(tail) }
                        }
                    }
                }
            } else {
                whole.update(chunk)
            }
            offset = end
        }
        return FileHashes(sha256: whole.hexDigest(), autoV1: autoV1, dataSHA256: dataStart == nil ? nil : data.hexDigest())
    }
}

/// Two hashers updated from two threads (each touches only its own).
private struct HasherPair: @unchecked Sendable {
    let whole: UnsafeMutablePointer<SHA256>
    let data: UnsafeMutablePointer<SHA256>
}

/// Incremental SHA-256 over the C kernel (SHA-NI where the CPU has it).
public struct SHA256 {
    private var ctx = mumu_sha256_ctx()
    public init() { mumu_sha256_init(&ctx) }
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if let base = bytes.baseAddress, bytes.count > 0 { mumu_sha256_update(&ctx, base, bytes.count) }
    }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
    /// The 32-byte digest (the hasher is spent afterwards).
    public mutating func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        mumu_sha256_final(&ctx, &out)
        return out
    }
    public mutating func hexDigest() -> String { Hashing.hex(finalize()) }
    /// Whether the SHA-NI path is in use on this CPU.
    public static var usesSHAExtensions: Bool { mumu_sha256_has_shani() != 0 }
}
