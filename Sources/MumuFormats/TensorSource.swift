import MumuTensor

/// What a file says of one tensor, before any of its data is read.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name; self.dtype = dtype; self.shape = shape
    }
    /// Element count (shapes are validated when read, so this does not overflow).
    public var elementCount: Int { shape.reduce(1, *) }
    /// Bytes of data.
    public var byteCount: Int { dtype.byteCount(elements: elementCount) ?? 0 }
}

/// A tensor's bytes, little-endian and row-major. For memory-mapped files the bytes point into the
/// mapping (zero-copy) and `owner` keeps the mapping alive; for converted tensors they are owned.
public struct TensorData: @unchecked Sendable {
    public let info: TensorInfo
    public let bytes: UnsafeRawBufferPointer
    /// Keeps `bytes` valid: the mapped file or an owned buffer.
    public let owner: AnyObject

    public init(info: TensorInfo, bytes: UnsafeRawBufferPointer, owner: AnyObject) {
        self.info = info; self.bytes = bytes; self.owner = owner
    }

    /// A tensor that owns a copy of the given bytes.
    public static func owned(_ info: TensorInfo, bytes: [UInt8]) -> TensorData {
        let buffer = OwnedBuffer(copying: bytes)
        return TensorData(info: info, bytes: buffer.rawBuffer, owner: buffer)
    }

    /// The values as f32 (converted for f16, bf16, f8, f64).
    public func floats() throws -> [Float] { try Convert.toF32Array(bytes, info.dtype) }

    /// A new tensor with the same values in another dtype.
    public func converted(to dtype: DType) throws -> TensorData {
        if dtype == info.dtype { return self }
        var newInfo = info
        newInfo.dtype = dtype
        let buffer = OwnedBuffer(byteCount: newInfo.byteCount)
        if info.elementCount > 0 {
            try Convert.convert(bytes.baseAddress!, from: info.dtype, to: dtype, buffer.pointer, count: info.elementCount)
        }
        return TensorData(info: newInfo, bytes: buffer.rawBuffer, owner: buffer)
    }

    /// The same bytes under another name and shape (element count must match).
    public func renamed(_ name: String, shape: [Int]? = nil) -> TensorData {
        var newInfo = info
        newInfo.name = name
        if let shape { newInfo.shape = shape }
        return TensorData(info: newInfo, bytes: bytes, owner: owner)
    }
}

/// A heap buffer that frees itself; the owner of converted tensor data.
public final class OwnedBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let count: Int
    public init(byteCount: Int) {
        count = byteCount
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
    }
    public convenience init(copying bytes: [UInt8]) {
        self.init(byteCount: bytes.count)
        bytes.withUnsafeBytes { if !$0.isEmpty { pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
    }
    public var rawBuffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }
    deinit { pointer.deallocate() }
}

/// Anything that holds named tensors: a safetensors file, a sharded set, a `.ckpt`, a diffusers
/// folder. Listing is cheap (headers only); data is read per tensor, on demand.
public protocol TensorSource: AnyObject, Sendable {
    /// Where the tensors come from (a file or a folder), for messages.
    var path: String { get }
    /// Every tensor, in the file's order.
    var tensors: [TensorInfo] { get }
    /// String metadata (`__metadata__` in safetensors; empty where the format has none).
    var metadata: [String: String] { get }
    /// The tensor's bytes; throws `FormatError.missingTensor` for an unknown name.
    func tensor(_ name: String) throws -> TensorData
}

extension TensorSource {
    /// Tensor descriptions by name.
    public var infoByName: [String: TensorInfo] {
        Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }
    public var names: [String] { tensors.map(\.name) }
}
