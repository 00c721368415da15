import CMumuKernels
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// The hashes the ecosystem uses to identify model files (REFERENCE 5):
/// - SHA256 of the whole file; AutoV2 (A1111's "Model hash") is its first 10 hex digits;
/// - AutoV1 (A1111's legacy hash): SHA256 of the 64 KiB at offset 1 MiB, first 8 hex digits;
/// - for safetensors, SHA256 of the tensor data only (header excluded): ModelSpec's `hash_sha256`
///   ("0x" + all of it) and AutoV3 (Civitai, kohya `sshs_model_hash`: first 12 hex digits).
public struct FileHashes: Codable, Sendable, Equatable {
    public var sha256: String
    public var autoV1: String
    /// SHA256 of the bytes after the safetensors header; nil for other formats.
    public var dataSHA256: String?

    public var autoV2: String { String(sha256.prefix(10)) }
    public var autoV3: String? { dataSHA256.map { String($0.prefix(12)) } }
    public var modelspecHash: String? { dataSHA256.map { "0x" + $0 } }
}

public enum Hashing {
    /// Hex SHA256 of a byte range, read in large slices (SHA-NI where the CPU has it).
    public static func sha256(_ bytes: UnsafeRawBufferPointer, release file: MappedFile? = nil, offset: Int = 0) -> String {
        var h = SHA256()
        let slice = 32 << 20
        var i = 0
        while i < bytes.count {
            let n = min(slice, bytes.count - i)
            h.update(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)]))
            // Drop the pages from this process once hashed, so hashing a 7 GB file keeps RSS small.
            file?.release(offset + i..<(offset + i + n))
            i += n
        }
        return hex(h.finalize())
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in digest { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Computes every hash of a file. For safetensors (when `dataStart` is given) the whole-file hash
    /// and the data-only hash run on two threads over the same mapping, so both cost one pass.
    public static func hashes(of file: MappedFile, dataStart: Int?) -> FileHashes {
        let all = file.all
        let v1Range = min(0x100000, all.count)..<min(0x110000, all.count)
        let autoV1 = String(sha256(UnsafeRawBufferPointer(rebasing: all[v1Range])).prefix(8))
        file.adviseSequential()
        guard let dataStart, dataStart <= all.count else {
            return FileHashes(sha256: sha256(all, release: file), autoV1: autoV1, dataSHA256: nil)
        }
        var results = ["", ""]
        results.withUnsafeMutableBufferPointer { out in
            let out = UnsafeMutableBufferPointerBox(out)
            DispatchQueue.concurrentPerform(iterations: 2) { k in
                if k == 0 {
                    out.buffer[0] = sha256(all)
                } else {
                    out.buffer[1] = sha256(UnsafeRawBufferPointer(rebasing: all[dataStart...]))
                }
            }
        }
        file.release(0..<all.count)
        return FileHashes(sha256: results[0], autoV1: autoV1, dataSHA256: results[1])
    }
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

/// Lets two threads write disjoint slots of one buffer.
struct UnsafeMutableBufferPointerBox<T>: @unchecked Sendable {
    let buffer: UnsafeMutableBufferPointer<T>
    init(_ b: UnsafeMutableBufferPointer<T>) { buffer = b }
}
