import CMumuKernels
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

    /// A tensor whose elements the caller overwrites, every one, before reading (kernel outputs): skips the
    /// zero fill, a full extra pass over the memory of every activation.
    init(uninitialized shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        let n = shape.reduce(1, *)
        self.shape = shape
        data = [Float](unsafeUninitializedCapacity: n) { _, count in count = n }
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
        concurrentPerform(iterations: chunks) { c in
            let lo = c * size, hi = min(count, lo + size)
            if lo < hi { body(lo..<hi) }
        }
    }

    /// `DispatchQueue.concurrentPerform` for the kernels' work, whose closures capture raw pointers (not
    /// `Sendable`) and write disjoint parts of one buffer: the one place that claims that is safe. Every caller
    /// gives each iteration its own output range (rows, columns, heads) and only reads what others write before
    /// the call; the call returns after every iteration has finished.
    @inline(__always)
    public static func concurrentPerform(iterations: Int, _ work: (Int) -> Void) {
        withoutActuallyEscaping(work) { work in
            nonisolated(unsafe) let shared = work
            DispatchQueue.concurrentPerform(iterations: iterations) { shared($0) }
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

/// Memory for long-lived large buffers (model weights): mapped from the OS directly rather than taken from the
/// malloc heap. Interleaving gigabytes of long-lived weights with the loader's short-lived conversion buffers
/// fragmented glibc's heap by 2 GB over SDXL's UNet (RSS 7.2 GB for 5.1 GB of bf16 weights); mapped weights
/// leave the heap to the temporaries. Page-aligned, so also 64-byte aligned for the kernels.
public enum WeightMemory {
    /// `bytes` of zeroed memory (at least one page).
    public static func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        let size = max(bytes, 1)
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("out of memory: cannot map \(size) bytes for model weights")
        }
        return p
    }

    public static func free(_ p: UnsafeMutableRawPointer, _ bytes: Int) { munmap(p, max(bytes, 1)) }

    /// Returns the heap's free pages to the OS (glibc `malloc_trim`): the loaders call it as they go, after
    /// their conversion buffers are gone.
    public static func releaseFreedHeap() {
        mumu_release_freed_heap()
    }

    /// Called once a model is loaded, before it runs: returns the loader's freed pages to the OS, then has the
    /// heap keep what the activations free. glibc maps every allocation over 32 MB (most of a UNet's or VAE's
    /// activations at 512 and up) fresh from the OS and unmaps it when freed, so each evaluation faulted in and
    /// zeroed its activations again, page by page: 0.85 M page faults and about 9 s of system time per VAE decode
    /// at 512x512. From the heap, one evaluation's freed buffers serve the next (docs/benchmarks.md, "Activation
    /// memory"); the process holds its peak activation memory until it exits or a loader trims the heap.
    public static func modelLoaded() {
        mumu_release_freed_heap()
        mumu_keep_freed_heap()
    }
}
