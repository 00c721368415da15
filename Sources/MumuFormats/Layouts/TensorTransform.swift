import MumuTensor

/// How the target tensors of a `Mapping` are made from its source tensors. Every transform keeps the
/// dtype and the bytes of each element; each has an inverse, so a conversion and its way back are exact.
public enum TensorTransform: Hashable, Sendable, CustomStringConvertible {
    /// One source, one target, same shape and bytes (a rename).
    case identity
    /// sgm VAE attention 1x1 conv `[O, I, 1, 1]` (or conv1d `[O, I, 1]`) -> diffusers Linear `[O, I]`. Same bytes.
    case linearFromConv1x1
    /// diffusers Linear `[O, I]` -> 1x1 conv `[O, I, 1, 1]`. Same bytes.
    case conv1x1FromLinear
    /// One source cut along dim 0 into as many equal targets as the mapping names (bigG fused
    /// `in_proj` -> q, k, v). The targets point into the source's bytes.
    case splitRows
    /// Several sources stacked along dim 0 into one target (q, k, v -> fused `in_proj`).
    case concatRows
    /// One 2-D source transposed (bigG bare `text_projection [W, P]` <-> `text_projection.weight [P, W]`).
    case transpose

    public var inverse: TensorTransform {
        switch self {
        case .identity: return .identity
        case .linearFromConv1x1: return .conv1x1FromLinear
        case .conv1x1FromLinear: return .linearFromConv1x1
        case .splitRows: return .concatRows
        case .concatRows: return .splitRows
        case .transpose: return .transpose
        }
    }

    public var description: String {
        switch self {
        case .identity: return "identity"
        case .linearFromConv1x1: return "reshape [O,I,1,1] -> [O,I]"
        case .conv1x1FromLinear: return "reshape [O,I] -> [O,I,1,1]"
        case .splitRows: return "split rows"
        case .concatRows: return "concat rows"
        case .transpose: return "transpose"
        }
    }

    /// True when the targets point into the source's bytes (no copy).
    public var isZeroCopy: Bool {
        switch self {
        case .identity, .linearFromConv1x1, .conv1x1FromLinear, .splitRows: return true
        case .concatRows, .transpose: return false
        }
    }

    /// The targets' descriptions, from the sources' (same dtype). Throws `FormatError.badTensor`
    /// naming the source tensor when its shape does not fit the transform.
    public func targetInfos(sources: [TensorInfo], targets: [String], path: String) throws -> [TensorInfo] {
        func bad(_ info: TensorInfo, _ reason: String) -> FormatError {
            .badTensor(path: path, tensor: info.name, reason: "cannot \(description) for \(targets.joined(separator: ", ")): \(reason)")
        }
        let first = sources[0]
        switch self {
        case .identity:
            return [TensorInfo(name: targets[0], dtype: first.dtype, shape: first.shape)]
        case .linearFromConv1x1:
            let s = first.shape
            guard s.count >= 2, s.dropFirst(2).allSatisfy({ $0 == 1 }) else {
                throw bad(first, "shape \(s) is not a 1x1 convolution [O, I, 1, 1]")
            }
            return [TensorInfo(name: targets[0], dtype: first.dtype, shape: Array(s.prefix(2)))]
        case .conv1x1FromLinear:
            guard first.shape.count == 2 else { throw bad(first, "shape \(first.shape) is not a Linear weight [O, I]") }
            return [TensorInfo(name: targets[0], dtype: first.dtype, shape: first.shape + [1, 1])]
        case .splitRows:
            let parts = targets.count
            guard parts > 0, let rows = first.shape.first, rows % parts == 0 else {
                throw bad(first, "shape \(first.shape) does not split into \(targets.count) equal row blocks")
            }
            let shape = [rows / parts] + first.shape.dropFirst()
            return targets.map { TensorInfo(name: $0, dtype: first.dtype, shape: shape) }
        case .concatRows:
            guard !first.shape.isEmpty else { throw bad(first, "a scalar has no rows to stack") }
            var rows = 0
            for info in sources {
                guard info.dtype == first.dtype else {
                    throw bad(info, "dtype \(info.dtype.rawValue) differs from \(first.name)'s \(first.dtype.rawValue)")
                }
                guard info.shape.count == first.shape.count, info.shape.dropFirst() == first.shape.dropFirst() else {
                    throw bad(info, "shape \(info.shape) does not stack with \(first.name)'s \(first.shape)")
                }
                rows += info.shape[0]
            }
            return [TensorInfo(name: targets[0], dtype: first.dtype, shape: [rows] + first.shape.dropFirst())]
        case .transpose:
            guard first.shape.count == 2 else { throw bad(first, "shape \(first.shape) is not 2-D") }
            guard first.dtype.byteSize != nil else { throw bad(first, "dtype \(first.dtype.rawValue) is not whole bytes") }
            return [TensorInfo(name: targets[0], dtype: first.dtype, shape: [first.shape[1], first.shape[0]])]
        }
    }

    /// Makes target number `index` (described by `target`) from the loaded sources.
    public func apply(_ sources: [TensorData], target: TensorInfo, index: Int, path: String) throws -> TensorData {
        let first = sources[0]
        switch self {
        case .identity, .linearFromConv1x1, .conv1x1FromLinear:
            return first.renamed(target.name, shape: target.shape)
        case .splitRows:
            let part = target.byteCount
            guard part * (index + 1) <= first.bytes.count else {
                throw FormatError.badTensor(path: path, tensor: first.info.name, reason: "holds \(first.bytes.count) bytes, too few to split")
            }
            let slice = UnsafeRawBufferPointer(rebasing: first.bytes[(part * index)..<(part * (index + 1))])
            return TensorData(info: target, bytes: slice, owner: first.owner)
        case .concatRows:
            let buffer = OwnedBuffer(byteCount: target.byteCount)
            var offset = 0
            for source in sources {
                guard offset + source.bytes.count <= buffer.count else {
                    throw FormatError.badTensor(path: path, tensor: source.info.name, reason: "holds more bytes than its shape says")
                }
                if let base = source.bytes.baseAddress, !source.bytes.isEmpty {
                    (buffer.pointer + offset).copyMemory(from: base, byteCount: source.bytes.count)
                }
                offset += source.bytes.count
            }
            return TensorData(info: target, bytes: buffer.rawBuffer, owner: buffer)
        case .transpose:
            let buffer = OwnedBuffer(byteCount: target.byteCount)
            let rows = first.info.shape[0], cols = first.info.shape[1]
            guard let size = first.info.dtype.byteSize, first.bytes.count == rows * cols * size else {
                throw FormatError.badTensor(path: path, tensor: first.info.name, reason: "byte count does not match shape \(first.info.shape)")
            }
            if let src = first.bytes.baseAddress, rows * cols > 0 {
                switch size {
                case 1: transpose2D(src, buffer.pointer, rows, cols, UInt8.self)
                case 2: transpose2D(src, buffer.pointer, rows, cols, UInt16.self)
                case 4: transpose2D(src, buffer.pointer, rows, cols, UInt32.self)
                default: transpose2D(src, buffer.pointer, rows, cols, UInt64.self)  // 8 (C64 is 8 bytes too)
                }
            }
            return TensorData(info: target, bytes: buffer.rawBuffer, owner: buffer)
        }
    }
}

/// `dst[c][r] = src[r][c]` for a row-major `rows x cols` matrix of `T`, in cache-sized tiles.
private func transpose2D<T>(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ rows: Int, _ cols: Int, _: T.Type) {
    let s = src.assumingMemoryBound(to: T.self)
    let d = dst.assumingMemoryBound(to: T.self)
    let tile = 32
    for r0 in stride(from: 0, to: rows, by: tile) {
        for c0 in stride(from: 0, to: cols, by: tile) {
            for r in r0..<min(r0 + tile, rows) {
                for c in c0..<min(c0 + tile, cols) {
                    d[c * rows + r] = s[r * cols + c]
                }
            }
        }
    }
}
