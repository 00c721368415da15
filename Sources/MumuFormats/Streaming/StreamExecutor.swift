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
                    let p: StreamProgress = lock.locked {
                        done += 1; bytesDone += offset
                        return StreamProgress(tensorsDone: done, tensorsTotal: jobs.count, bytesDone: bytesDone, bytesTotal: total)
                    }
                    progress?(p)
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

    /// A job body that streams a source tensor converted to `dtype`, part by part, releasing the
    /// source pages as it goes when the source is memory-mapped.
    public static func converting(_ source: TensorData, to dtype: DType) -> (_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void {
        let mapped = source.owner as? MappedFile
        return { emit in
            let count = source.info.elementCount
            if count == 0 { return }
            if dtype == source.info.dtype {
                let step = partElements * max(1, dtype.byteSize ?? 1)
                var i = 0
                while i < source.bytes.count {
                    let n = min(step, source.bytes.count - i)
                    populatePages(source, mapped, i..<(i + n))
                    try emit(UnsafeRawBufferPointer(rebasing: source.bytes[i..<(i + n)]))
                    releasePages(source, mapped, i..<(i + n))
                    i += n
                }
                return
            }
            guard let inSize = source.info.dtype.byteSize, let outSize = dtype.byteSize else {
                throw ConversionError(from: source.info.dtype, to: dtype)
            }
            let buffer = OwnedBuffer(byteCount: min(count, partElements) * outSize)
            var e = 0
            while e < count {
                let n = min(partElements, count - e)
                populatePages(source, mapped, (e * inSize)..<((e + n) * inSize))
                try Convert.convert(source.bytes.baseAddress! + e * inSize, from: source.info.dtype, to: dtype, buffer.pointer, count: n)
                try emit(UnsafeRawBufferPointer(start: buffer.pointer, count: n * outSize))
                releasePages(source, mapped, (e * inSize)..<((e + n) * inSize))
                e += n
            }
        }
    }

    private static func populatePages(_ source: TensorData, _ mapped: MappedFile?, _ range: Range<Int>) {
        guard let mapped, let base = mapped.base, let start = source.bytes.baseAddress else { return }
        let offset = start - base
        mapped.populate((offset + range.lowerBound)..<(offset + range.upperBound))
    }

    private static func releasePages(_ source: TensorData, _ mapped: MappedFile?, _ range: Range<Int>) {
        guard let mapped, let base = mapped.base, let start = source.bytes.baseAddress else { return }
        let offset = start - base
        mapped.release((offset + range.lowerBound)..<(offset + range.upperBound))
    }
}
