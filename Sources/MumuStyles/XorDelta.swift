import CZstd
import Dispatch
import Foundation
import MumuFormats
import MumuTensor

/// Lossless delta storage: each tensor of the variant is stored as the XOR of its bits with the base's
/// (same name, dtype and shape), split into byte planes (all low bytes, then all high bytes: a small
/// perturbation leaves sign, exponent and top mantissa bits equal, so the high plane is mostly zeros) and
/// zstd-compressed. Tensors without a base counterpart are stored compressed as they are. The variant is
/// rebuilt bit for bit, one tensor at a time (a style patches only the keys it changes).
///
/// File layout (`mumu-xor-delta`, version 1):
/// ```
/// "MUMUXOR1" | zstd frames, one a tensor, in name order | index JSON | u64 LE index length | "MUMUXOR1"
/// ```
/// Index: {"version":1, "base_sha256", "metadata": {variant's metadata}, "removed": [keys of the base the
/// variant lacks], "tensors": [{"name","dtype","shape","mode": "xor"|"raw","offset","length"}]}.
public enum XorDelta {
    static let magic = Array("MUMUXOR1".utf8)
    public static let format = "mumu-xor-delta"

    public struct Entry: Sendable {
        public var info: TensorInfo
        public var xor: Bool
        public var offset: Int
        public var length: Int
    }

    /// Encodes `variant` against `base` into `path` (atomically). Tensors are compressed in parallel in
    /// batches and written in name order, so the file is the same whatever `threads` is.
    public static func encode(variant: TensorSource, base: TensorSource, baseSHA256: String, to path: String,
                              threads: Int, level: Int32 = 3, overwrite: Bool = false,
                              progress: ((Int, Int) -> Void)? = nil) throws -> Int {
        let baseInfos = base.infoByName
        let tensors = variant.tensors.sorted { $0.name < $1.name }
        let out = try AtomicFile(path: path, overwrite: overwrite)
        var position = 0
        func append(_ bytes: UnsafeRawBufferPointer) throws {
            try out.write(bytes, at: position)
            position += bytes.count
        }
        do {
            try magic.withUnsafeBytes { try append($0) }
            var entries: [Entry] = []
            // Batches of about 256 MB of input keep memory bounded while every thread has work.
            var start = 0
            while start < tensors.count {
                var end = start, bytes = 0
                while end < tensors.count && (end == start || bytes + tensors[end].byteCount <= 256 << 20) {
                    bytes += tensors[end].byteCount; end += 1
                }
                let batch = Array(tensors[start..<end])
                var frames = [[UInt8]?](repeating: nil, count: batch.count)
                var modes = [Bool](repeating: false, count: batch.count)
                var failure: Error?
                let lock = Mutex()
                var next = 0
                DispatchQueue.concurrentPerform(iterations: max(1, min(threads, batch.count))) { _ in
                    while true {
                        let i: Int? = lock.locked { guard failure == nil, next < batch.count else { return nil }; defer { next += 1 }; return next }
                        guard let i else { return }
                        do {
                            let info = batch[i]
                            let data = try variant.tensor(info.name)
                            let counterpart = baseInfos[info.name].flatMap { $0.dtype == info.dtype && $0.shape == info.shape ? $0 : nil }
                            let baseData = try counterpart.map { try base.tensor($0.name) }
                            let variantBytes = try XorDelta.copied(data), baseBytes = try baseData.map(XorDelta.copied)
                            let frame = try withExtendedLifetime((data, baseData, variantBytes, baseBytes)) {
                                try compress(variantBytes.rawBuffer, xorWith: baseBytes?.rawBuffer,
                                             elementSize: info.dtype.byteSize ?? 1, level: level)
                            }
                            lock.locked { frames[i] = frame; modes[i] = baseData != nil }
                        } catch {
                            lock.locked { if failure == nil { failure = error } }
                        }
                    }
                }
                if let failure { throw failure }
                for (i, info) in batch.enumerated() {
                    let frame = frames[i]!
                    entries.append(Entry(info: info, xor: modes[i], offset: position, length: frame.count))
                    try frame.withUnsafeBytes { try append($0) }
                }
                progress?(end, tensors.count)
                start = end
            }
            let variantNames = Set(tensors.map(\.name))
            let removed = base.tensors.map(\.name).filter { !variantNames.contains($0) }.sorted()
            let index: JSONValue = .object([
                ("version", .int(1)),
                ("base_sha256", .string(baseSHA256)),
                ("metadata", .object(variant.metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
                ("removed", .array(removed.map { .string($0) })),
                ("tensors", .array(entries.map { e in
                    .object([("name", .string(e.info.name)), ("dtype", .string(e.info.dtype.rawValue)),
                             ("shape", .array(e.info.shape.map { .int($0) })), ("mode", .string(e.xor ? "xor" : "raw")),
                             ("offset", .int(e.offset)), ("length", .int(e.length))])
                })),
            ])
            let json = Array(JSONWriter.write(index).utf8)
            try json.withUnsafeBytes { try append($0) }
            try withUnsafeBytes(of: UInt64(json.count).littleEndian) { try append($0) }
            try magic.withUnsafeBytes { try append($0) }
            try out.commit()
            return position
        } catch {
            out.abort()
            throw error
        }
    }

    /// A tensor's bytes in a buffer of our own: read with pread when it lies in a mapped file, so encoding
    /// two 7 GB checkpoints does not fault their pages into this process (RSS stays at the batch's size).
    static func copied(_ data: TensorData) throws -> OwnedBuffer {
        let buffer = OwnedBuffer(byteCount: data.bytes.count)
        if let file = data.owner as? MappedFile, let offset = file.offset(of: data.bytes.baseAddress) {
            if data.bytes.count > 0 { try file.read(offset..<(offset + data.bytes.count), into: buffer.pointer) }
        } else if data.bytes.count > 0 {
            buffer.pointer.copyMemory(from: data.bytes.baseAddress!, byteCount: data.bytes.count)
        }
        return buffer
    }

    /// XOR (when a base is given), byte-plane split, zstd.
    static func compress(_ bytes: UnsafeRawBufferPointer, xorWith base: UnsafeRawBufferPointer?, elementSize: Int, level: Int32) throws -> [UInt8] {
        let n = bytes.count
        let planes = UnsafeMutablePointer<UInt8>.allocate(capacity: max(n, 1))
        defer { planes.deallocate() }
        let src = bytes.bindMemory(to: UInt8.self)
        let count = elementSize > 0 ? n / elementSize : n
        if let base {
            let b = base.bindMemory(to: UInt8.self)
            for p in 0..<elementSize {
                let plane = planes + p * count
                for i in 0..<count { plane[i] = src[i * elementSize + p] ^ b[i * elementSize + p] }
            }
        } else {
            for p in 0..<elementSize {
                let plane = planes + p * count
                for i in 0..<count { plane[i] = src[i * elementSize + p] }
            }
        }
        let bound = ZSTD_compressBound(n)
        var frame = [UInt8](repeating: 0, count: bound)
        // A content checksum in every frame: damage is reported when the tensor is read, never decoded.
        guard let cctx = ZSTD_createCCtx() else { throw StyleError.invalid("zstd: cannot create a context") }
        defer { ZSTD_freeCCtx(cctx) }
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        let written = frame.withUnsafeMutableBytes { dst in
            ZSTD_compress2(cctx, dst.baseAddress, bound, planes, n)
        }
        guard ZSTD_isError(written) == 0 else {
            throw StyleError.invalid("zstd: \(String(cString: ZSTD_getErrorName(written)))")
        }
        frame.removeSubrange(written...)
        return frame
    }

    /// An encoded delta, opened: its index, and the variant's tensors rebuilt on demand against a base.
    public final class Reader: @unchecked Sendable {
        public let path: String
        public let baseSHA256: String
        public let metadata: [String: String]
        public let removed: [String]
        public let entries: [String: Entry]
        public let order: [String]
        let file: MappedFile

        public init(path: String) throws {
            self.path = path
            file = try MappedFile(path: path)
            let all = file.all
            let tail = 16
            guard all.count >= 8 + tail, Array(all[0..<8]) == XorDelta.magic, Array(all[(all.count - 8)...]) == XorDelta.magic else {
                throw StyleError.corrupt(path, "not a mumu-xor-delta file (bad magic)")
            }
            var length: UInt64 = 0
            withUnsafeMutableBytes(of: &length) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: all[(all.count - 16)..<(all.count - 8)])) }
            let indexLength = Int(UInt64(littleEndian: length))
            guard indexLength > 0, indexLength <= all.count - 8 - tail else { throw StyleError.corrupt(path, "index length \(indexLength) out of bounds") }
            let indexStart = all.count - tail - indexLength
            let index = try JSONParser.parse(UnsafeRawBufferPointer(rebasing: all[indexStart..<(all.count - tail)]))
            guard index["version"]?.intValue == 1, let base = index["base_sha256"]?.stringValue,
                  let list = index["tensors"]?.arrayValue else {
                throw StyleError.corrupt(path, "index lacks version 1, base_sha256 or tensors")
            }
            baseSHA256 = base
            var meta: [String: String] = [:]
            for (k, v) in index["metadata"]?.objectValue ?? [] { meta[k] = v.stringValue }
            metadata = meta
            removed = (index["removed"]?.arrayValue ?? []).compactMap(\.stringValue)
            var entries: [String: Entry] = [:]
            var order: [String] = []
            for item in list {
                guard let name = item["name"]?.stringValue, let dt = item["dtype"]?.stringValue, let dtype = DType(rawValue: dt),
                      let shape = item["shape"]?.arrayValue?.compactMap(\.intValue), let offset = item["offset"]?.intValue,
                      let len = item["length"]?.intValue, offset >= 8, len >= 0, offset + len <= indexStart else {
                    throw StyleError.corrupt(path, "bad index entry \(JSONWriter.write(item).prefix(200))")
                }
                entries[name] = Entry(info: TensorInfo(name: name, dtype: dtype, shape: shape), xor: item["mode"]?.stringValue == "xor",
                                      offset: offset, length: len)
                order.append(name)
            }
            self.entries = entries
            self.order = order
        }

        public var tensors: [TensorInfo] { order.map { entries[$0]!.info } }

        /// The variant's tensor, rebuilt from the frame and (for xor entries) the base's tensor.
        public func tensor(_ name: String, base: TensorSource) throws -> TensorData {
            guard let e = entries[name] else { throw FormatError.missingTensor(path: path, tensor: name) }
            let size = e.info.byteCount
            let planes = OwnedBuffer(byteCount: size)
            let got = ZSTD_decompress(planes.pointer, size, file.base! + e.offset, e.length)
            guard ZSTD_isError(got) == 0, got == size else {
                throw StyleError.corrupt(path, "tensor '\(name)': the compressed frame is damaged (\(ZSTD_isError(got) != 0 ? String(cString: ZSTD_getErrorName(got)) : "\(got) of \(size) bytes"))")
            }
            let out = OwnedBuffer(byteCount: size)
            let elementSize = e.info.dtype.byteSize ?? 1
            let count = elementSize > 0 ? size / elementSize : size
            let p = planes.pointer.assumingMemoryBound(to: UInt8.self), o = out.pointer.assumingMemoryBound(to: UInt8.self)
            if e.xor {
                let b = try base.tensor(name)
                guard b.info.byteCount == size else {
                    throw StyleError.corrupt(path, "tensor '\(name)': the base's is \(b.info.shape) \(b.info.dtype.rawValue), the delta's \(e.info.shape)")
                }
                withExtendedLifetime(b) {
                    let bb = b.bytes.bindMemory(to: UInt8.self)
                    for q in 0..<elementSize {
                        let plane = p + q * count
                        for i in 0..<count { o[i * elementSize + q] = plane[i] ^ bb[i * elementSize + q] }
                    }
                }
            } else {
                for q in 0..<elementSize {
                    let plane = p + q * count
                    for i in 0..<count { o[i * elementSize + q] = plane[i] }
                }
            }
            return TensorData(info: e.info, bytes: out.rawBuffer, owner: out)
        }
    }
}

/// A delta applied to its base, seen as a model (for materializing and for merges).
public final class DeltaSource: TensorSource, @unchecked Sendable {
    public let reader: XorDelta.Reader
    public let base: TensorSource
    public init(reader: XorDelta.Reader, base: TensorSource) { self.reader = reader; self.base = base }
    public var path: String { reader.path }
    public var tensors: [TensorInfo] { reader.tensors }
    public var metadata: [String: String] { reader.metadata }
    public func tensor(_ name: String) throws -> TensorData { try reader.tensor(name, base: base) }
}
