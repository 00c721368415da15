import Dispatch
import MumuTensor

/// One output tensor of a streamed job: its declared info and a body that produces its bytes in
/// consecutive parts through `emit` (so a 250 MB tensor never needs to exist whole).
public struct StreamJob: @unchecked Sendable {
    public var output: TensorInfo
    public var produce: (_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    public init(output: TensorInfo, produce: @escaping (_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) {
        self.output = output; self.produce = produce
    }
}

/// Progress of a streamed job, reported after each tensor.
public struct StreamProgress: Sendable {
    public var tensorsDone: Int
    public var tensorsTotal: Int
    public var bytesDone: Int
    public var bytesTotal: Int
}

/// Runs jobs on a bounded pool of threads, each writing its parts straight into the sink. Memory is
/// bounded by threads x part size, independent of model size.
public enum StreamExecutor {
    /// Elements per part: 4 Mi elements (16 MiB of f32) keeps per-thread buffers small.
    public static let partElements = 4 << 20

    public static func run(_ jobs: [StreamJob], into sink: ModelSink, threads: Int,
                           progress: ((StreamProgress) -> Void)? = nil) throws {
        let total = jobs.reduce(0) { $0 + $1.output.byteCount }
        let lock = Mutex()
        var next = 0
        var done = 0
        var bytesDone = 0
        var firstError: Error?
        let workers = max(1, min(threads, jobs.count))
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while true {
                let i: Int? = lock.locked {
                    guard firstError == nil, next < jobs.count else { return nil }
                    defer { next += 1 }
                    return next
                }
                guard let i else { return }
                let job = jobs[i]
                do {
                    var offset = 0
                    try job.produce { part in
                        try sink.writePart(job.output.name, offset: offset, part)
                        offset += part.count
                    }
                    guard offset == job.output.byteCount else {
                        throw FormatError.badTensor(path: "output", tensor: job.output.name,
                                                    reason: "produced \(offset) bytes, expected \(job.output.byteCount)")
                    }
                    // Reported under the lock: callbacks come one at a time, in order (a caller may append to an
                    // array or draw a bar without locking; keep them cheap).
                    lock.locked {
                        done += 1; bytesDone += offset
                        progress?(StreamProgress(tensorsDone: done, tensorsTotal: jobs.count, bytesDone: bytesDone, bytesTotal: total))
                    }
                } catch {
                    lock.locked { if firstError == nil { firstError = error } }
                    return
                }
            }
        }
        if let firstError {
            sink.abort()
            throw firstError
        }
        try sink.finish()
    }

    /// A job body that streams a source tensor converted to `dtype`, part by part. When the tensor
    /// lies in a memory-mapped file, each part is read with pread into a small buffer instead of
    /// through the mapping (no page faults, no resident growth).
    public static func converting(_ source: TensorData, to dtype: DType) -> (_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void {
        let file = source.owner as? MappedFile
        let fileOffset = file?.offset(of: source.bytes.baseAddress)
        return { emit in
            let count = source.info.elementCount
            if count == 0 { return }
            guard let inSize = source.info.dtype.byteSize, let outSize = dtype.byteSize else {
                if dtype == source.info.dtype { try emit(source.bytes); return }
                throw ConversionError(from: source.info.dtype, to: dtype)
            }
            let part = min(count, partElements)
            let staging = (file != nil && fileOffset != nil) ? OwnedBuffer(byteCount: part * inSize) : nil
            let output = dtype == source.info.dtype ? nil : OwnedBuffer(byteCount: part * outSize)
            var e = 0
            while e < count {
                let n = min(part, count - e)
                var input = UnsafeRawPointer(source.bytes.baseAddress! + e * inSize)
                if let staging, let file, let fileOffset {
                    try file.read((fileOffset + e * inSize)..<(fileOffset + (e + n) * inSize), into: staging.pointer)
                    input = UnsafeRawPointer(staging.pointer)
                }
                if let output {
                    try Convert.convert(input, from: source.info.dtype, to: dtype, output.pointer, count: n)
                    try emit(UnsafeRawBufferPointer(start: output.pointer, count: n * outSize))
                } else {
                    try emit(UnsafeRawBufferPointer(start: input, count: n * inSize))
                }
                e += n
            }
        }
    }
}
