import CMumuKernels
import Foundation
import MumuFormats
import MumuTensor

/// Runs a plan: one streamed job per output key. A key is computed in chunks of whole rows (at most
/// `chunkElements` f32 values per node), so memory is bounded by threads x graph size x chunk size,
/// whatever the model's size. Input chunks are read with pread (no mapping grows resident), converted
/// to f32, fed through the key's kernels, converted to the output dtype and handed to the sink.
public final class MergeExecutor: @unchecked Sendable {
    public let plan: MergePlan
    /// f32 values per node buffer: 4 Mi (16 MiB).
    public var chunkElements = 4 << 20
    private let pool = BufferPool()
    private let lock = Mutex()
    private var inputNonFinite: [String: Int] = [:]

    public init(plan: MergePlan) { self.plan = plan }

    /// Inputs that hold non-finite values, as "model: key (n values)" lines, after `run`.
    public var nonFiniteInputs: [String] { lock.locked { inputNonFinite.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value) values)" } } }

    /// The jobs, in the output's order.
    public func jobs(order: [TensorInfo]? = nil) -> [StreamJob] {
        (order ?? plan.outputs).map { out in
            StreamJob(output: out) { [self] emit in try self.produce(out, emit: emit) }
        }
    }

    /// Streams the merge into `sink`.
    public func run(into sink: ModelSink, threads: Int, progress: ((StreamProgress) -> Void)? = nil) throws {
        try StreamExecutor.run(jobs(order: (sink as? SafetensorsWriter)?.tensors), into: sink, threads: threads, progress: progress)
    }

    /// How many values have |x| >= `magnitude` or are NaN (`mumu_count_at_least_f32`: on the bit patterns,
    /// vectorized; it was a third of a merge's CPU time as a Swift loop the compiler left scalar).
    static func countAtLeast(_ values: UnsafePointer<Float>, _ n: Int, magnitude: Float) -> Int {
        mumu_count_at_least_f32(values, n, magnitude)
    }

    // MARK: one key

    private func produce(_ out: TensorInfo, emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        let key = out.name
        let readers = plan.reads[key] ?? []
        if let owner = plan.copied[key] {
            let data = try plan.inputs[owner].source.tensor(key)
            try withExtendedLifetime(data) { try StreamExecutor.converting(data, to: out.dtype)(emit) }
            return
        }
        guard let owner = readers.first, let info = plan.inputs[owner].infos[key] else {
            throw MergeError.output("\(key): no input to read")
        }
        let resolution = try plan.resolve(key: key, info: info)
        // Input tensors, opened once per key.
        var tensors: [Int: TensorData] = [:]
        for i in resolution.leaves { tensors[i] = try plan.inputs[i].source.tensor(key) }
        for (i, t) in tensors where t.info.shape != info.shape {
            throw MergeError.incompatible("tensor '\(key)': shape \(t.info.shape) in '\(plan.inputs[i].name)', \(info.shape) in '\(plan.inputs[owner].name)'")
        }
        try withExtendedLifetime(tensors) {
            try evaluate(resolution, tensors: tensors, out: out, emit: emit)
        }
    }

    private func evaluate(_ r: MergePlan.Resolution, tensors: [Int: TensorData], out: TensorInfo,
                          emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        let total = out.elementCount
        if total == 0 { return }
        let rows = out.shape.count >= 1 ? max(out.shape[0], 1) : 1
        let rowSize = out.shape.count >= 1 ? total / rows : 1
        var granularity = rowSize
        for case .kernel(let k, _) in r.steps { granularity = max(granularity, k.granularity) }
        let perChunk = min(total, max(granularity, chunkElements / granularity * granularity))
        let chunkCount = (total + perChunk - 1) / perChunk
        func chunk(_ c: Int) -> Chunk {
            let start = c * perChunk, n = min(perChunk, total - start)
            let firstRow = rowSize > 0 ? start / rowSize : 0
            return Chunk(key: out.name, shape: out.shape, start: start, count: n,
                         rows: firstRow..<(firstRow + (n + rowSize - 1) / max(rowSize, 1)), total: total)
        }

        var buffers: [OwnedBuffer] = []
        defer { pool.giveBack(buffers) }
        for _ in r.steps { buffers.append(pool.take(bytes: perChunk * 4)) }
        let widest = tensors.values.map { $0.info.dtype.byteSize ?? 4 }.max() ?? 4
        let staging = pool.take(bytes: perChunk * max(widest, 4))
        defer { pool.giveBack([staging]) }
        var holds = Array(repeating: -1, count: r.steps.count)   // the chunk each step's buffer holds
        let readers: [Int: ChunkReader] = tensors.mapValues { ChunkReader($0) }

        func compute(_ s: Int, _ c: Int) throws {
            if holds[s] == c { return }
            let ch = chunk(c)
            let dst = buffers[s].pointer.assumingMemoryBound(to: Float.self)
            switch r.steps[s] {
            case .leaf(let i):
                let bad = try readers[i]!.read(ch.start, ch.count, into: dst, staging: staging.pointer)
                if bad > 0 { lock.locked { inputNonFinite["\(plan.inputs[i].name): \(out.name)", default: 0] += bad } }
            case .kernel(let kernel, let children):
                for child in children { try compute(child, c) }
                try kernel.map(inputs: children.map { UnsafePointer(buffers[$0].pointer.assumingMemoryBound(to: Float.self)) },
                               output: dst, chunk: ch)
            }
            holds[s] = c
        }

        // Reductions, children first (steps are in topological order).
        for s in r.steps.indices {
            guard case .kernel(let kernel, let children) = r.steps[s], kernel.reductionPasses > 0 else { continue }
            for pass in 0..<kernel.reductionPasses {
                for c in 0..<chunkCount {
                    for child in children { try compute(child, c) }
                    kernel.reduce(pass: pass,
                                  inputs: children.map { UnsafePointer(buffers[$0].pointer.assumingMemoryBound(to: Float.self)) },
                                  chunk: chunk(c))
                }
                kernel.endPass(pass)
            }
        }

        // The output pass.
        let limit: Float = out.dtype == .f16 ? 65520 : (out.dtype == .f8e4m3 ? 464 : .greatestFiniteMagnitude)
        let outSize = out.dtype.byteSize ?? 4
        for c in 0..<chunkCount {
            try compute(r.output, c)
            let ch = chunk(c)
            let values = buffers[r.output].pointer.assumingMemoryBound(to: Float.self)
            if !plan.options.allowNonFinite {
                let bad = MergeExecutor.countAtLeast(values, ch.count, magnitude: limit)
                if bad > 0 {
                    var first = 0
                    while abs(values[first]) < limit { first += 1 }
                    first += ch.start
                    throw MergeError.output("tensor '\(out.name)': \(bad) output values are not finite in \(out.dtype) (first at element \(first)); "
                        + "check the inputs and arguments, or pass --allow-nonfinite")
                }
            }
            if out.dtype == .f32 {
                try emit(UnsafeRawBufferPointer(start: values, count: ch.count * 4))
            } else {
                try Convert.fromF32(values, staging.pointer, out.dtype, count: ch.count)
                try emit(UnsafeRawBufferPointer(start: staging.pointer, count: ch.count * outSize))
            }
        }
    }
}

/// Reads element ranges of one input tensor as f32: pread into a staging buffer for tensors in a
/// mapped file, straight from memory otherwise.
struct ChunkReader {
    let data: TensorData
    let file: MappedFile?
    let fileOffset: Int?
    let size: Int

    init(_ data: TensorData) {
        self.data = data
        let f = data.owner as? MappedFile
        file = f
        fileOffset = f?.offset(of: data.bytes.baseAddress)
        size = data.info.dtype.byteSize ?? 4
    }

    /// Converts elements [start, start + n) to f32 into `dst`; returns how many are not finite.
    func read(_ start: Int, _ n: Int, into dst: UnsafeMutablePointer<Float>, staging: UnsafeMutableRawPointer) throws -> Int {
        var src = UnsafeRawPointer(data.bytes.baseAddress! + start * size)
        if let file, let fileOffset {
            try file.read((fileOffset + start * size)..<(fileOffset + (start + n) * size), into: staging)
            src = UnsafeRawPointer(staging)
        }
        try Convert.toF32(src, data.info.dtype, dst, count: n)
        return MergeExecutor.countAtLeast(dst, n, magnitude: .infinity)
    }
}

/// Reused chunk buffers: keys come and go thousands of times, and fresh 16 MiB allocations would
/// page-fault on every one. Holds at most what the busiest moment needed.
final class BufferPool: @unchecked Sendable {
    private var free: [OwnedBuffer] = []
    private let lock = Mutex()

    func take(bytes: Int) -> OwnedBuffer {
        lock.locked {
            // Best fit, so small keys do not hold on to the large buffers.
            var best: Int?
            for (i, b) in free.enumerated() where b.count >= bytes && (best == nil || b.count < free[best!].count) { best = i }
            return best.map { free.remove(at: $0) }
        } ?? OwnedBuffer(byteCount: bytes)
    }

    func giveBack(_ buffers: [OwnedBuffer]) {
        lock.locked { free.append(contentsOf: buffers) }
    }
}
