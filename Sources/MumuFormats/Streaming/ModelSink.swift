import MumuTensor

/// Where streamed tensors go: a safetensors file, a sharded set, a diffusers folder. Every tensor
/// is declared up front; parts of a tensor may be written in any order, from any thread; nothing
/// appears at the destination until `finish()` succeeds.
public protocol ModelSink: AnyObject, Sendable {
    /// Writes `bytes` at byte `offset` inside the declared tensor `name`.
    func writePart(_ name: String, offset: Int, _ bytes: UnsafeRawBufferPointer) throws
    /// Checks that every declared tensor is complete and moves the output into place.
    func finish() throws
    /// Abandons the output; nothing is left at the destination.
    func abort()
}

extension ModelSink {
    /// Writes a whole tensor (converted to `dtype` when given and different).
    public func write(_ data: TensorData, as dtype: DType? = nil) throws {
        let out = try dtype.map { $0 == data.info.dtype ? data : try data.converted(to: $0) } ?? data
        // Keep both alive while their bytes are read (see TensorData's lifetime note in docs/architecture.md).
        try withExtendedLifetime((data, out)) { try writePart(data.info.name, offset: 0, out.bytes) }
    }
}
