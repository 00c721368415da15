import MumuTensor

/// A safetensors file, memory-mapped. Opening reads and validates the header only; tensors are
/// handed out zero-copy, pointing into the mapping, and pages are read when first touched.
public final class SafetensorsFile: TensorSource, @unchecked Sendable {
    public let path: String
    public let header: SafetensorsHeader
    public let file: MappedFile
    public let tensors: [TensorInfo]
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        header = try SafetensorsHeader.parse(file.all, path: path)
        tensors = header.entries.map(\.info)
        var index: [String: Int] = [:]
        index.reserveCapacity(tensors.count)
        for (i, e) in header.entries.enumerated() { index[e.info.name] = i }
        self.index = index
    }

    public var metadata: [String: String] { header.metadata }

    public func tensor(_ name: String) throws -> TensorData {
        guard let i = index[name] else { throw FormatError.missingTensor(path: path, tensor: name) }
        let e = header.entries[i]
        let start = header.dataStart + e.range.lowerBound
        return TensorData(info: e.info, bytes: file.bytes(start..<(start + e.range.count)), owner: file)
    }

    /// The byte range of the data buffer in the file (what AutoV3 and ModelSpec's hash cover).
    public var dataRange: Range<Int> { header.dataStart..<file.size }
}
