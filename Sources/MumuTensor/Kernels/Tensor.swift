import Foundation
import Synchronization

/// A dense f32 tensor: a shape and its elements in row-major order (NCHW for images, [B, T, C] for
/// token sequences). Deliberately minimal: no strides, no views, no dtype. The kernels in `NN` take and
/// return these; each also has a pointer-level form where that is useful to callers that own their buffers.
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var data: [Float]

    /// `data.count` must equal the product of `shape`.
    public init(shape: [Int], data: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(shape.reduce(1, *) == data.count, "shape \(shape) does not hold \(data.count) elements")
        self.shape = shape
        self.data = data
    }

    /// A tensor of zeros.
    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// The same elements under another shape of the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor { Tensor(shape: newShape, data: data) }
}

/// Helpers shared by the kernels (and the models built on them).
public enum KernelSupport {
    /// Runs `body(range)` over `count` items split into chunks of at least `minChunk`, in parallel with
    /// `DispatchQueue.concurrentPerform` when there is more than one chunk.
    @inline(__always)
    public static func parallelChunks(_ count: Int, minChunk: Int, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let chunks = min(max(1, count / max(1, minChunk)), workers * 4)
        if chunks <= 1 { body(0..<count); return }
        let size = (count + chunks - 1) / chunks
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = c * size, hi = min(count, lo + size)
            if lo < hi { body(lo..<hi) }
        }
    }
}

/// Floating-point operations done by the matrix products (2·M·N·K each) and attention, counted so benchmarks
/// report achieved FLOP/s from what actually ran rather than from an estimate.
public enum FlopCounter {
    private static let total = Atomic<Int>(0)
    public static func add(_ flops: Int) { total.add(flops, ordering: .relaxed) }
    public static var value: Int { total.load(ordering: .relaxed) }
    public static func reset() { total.store(0, ordering: .relaxed) }
}
