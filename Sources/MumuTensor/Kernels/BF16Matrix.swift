import CMumuKernels
import Foundation

/// A weight matrix W [rows = N, cols = K] (PyTorch `Linear` layout; a convolution's weight reordered to
/// [Cout, kh*kw*Cin]) kept in 16 bits, packed once into the panel layout of `mumu_bf16_gemm` (mumu_gemm.h), and
/// multiplied by f32 activations: C[M, N] (=|+=) A[M, K] · Wᵀ + bias, accumulated in f32. The path (`isa`) is
/// chosen at run time and capped by the environment variable
/// `MUMU_GEMM_ISA=portable|avx2|avx512bf16|avx512fp16|amx`; it decides the layout when the matrix is packed:
/// - bf16 (AMX, AVX-512 BF16, AVX2 + FMA with the weights widened in registers, portable C): W and A rounded to
///   bf16 (nearest even);
/// - f16 (AVX-512 FP16, for CPUs without AMX): W and A scaled by powers of two and rounded to f16, whose 11
///   significant bits make it the more exact of the two (gemm_f16.c).
public final class BF16Matrix: @unchecked Sendable {
    /// The paths of the kernel, in order of preference (the last the CPU has is the default).
    public enum ISA: Int32, CaseIterable, Sendable {
        case portable = 0, avx2 = 1, avx512bf16 = 2, avx512fp16 = 3, amx = 4
        public var name: String { String(cString: mumu_gemm_bf16_isa_name(rawValue)) }
        /// Whether this CPU and OS can run the path (ignores `MUMU_GEMM_ISA`).
        public var isAvailable: Bool { mumu_gemm_bf16_isa_available(rawValue) != 0 }
        /// Whether the path multiplies W in the f16 layout (else bf16).
        public var usesF16: Bool { mumu_gemm_isa_uses_f16(rawValue) != 0 }
    }

    /// N (output features) and K (input features).
    public let rows: Int, cols: Int
    /// The path `multiply` takes (it fixed the layout of the packed weight).
    public let isa: ISA
    private let packed: UnsafeMutableRawPointer
    private let packedBytes: Int

    /// Bytes of the packed weight (K padded to a multiple of 32, N to a multiple of 32; the f16 layout adds N
    /// column scales).
    public var byteCount: Int { packedBytes }

    /// What to tell the user about `MUMU_GEMM_ISA=value` (the environment's by default): nil when unset or a
    /// path this CPU has; else that the value is not a path (ignored) or names one this CPU lacks (the cap falls
    /// back to the best path below it), with the path taken.
    public static func environmentNote(_ value: String? = ProcessInfo.processInfo.environment["MUMU_GEMM_ISA"]) -> String? {
        guard let value else { return nil }
        guard let named = ISA.allCases.first(where: { $0.name == value }) else {
            let names = ISA.allCases.map(\.name).joined(separator: ", ")
            return "MUMU_GEMM_ISA=\(value) is not one of \(names): ignored, the GEMM takes \(defaultISA.name)"
        }
        if named.isAvailable { return nil }
        return "MUMU_GEMM_ISA=\(value): this CPU has no \(value) path, the GEMM takes \(defaultISA.name)"
    }

    /// The path `multiply` takes by default.
    public static var isa: String { defaultISA.name }
    public static var defaultISA: ISA { ISA(rawValue: mumu_gemm_bf16_isa()) ?? .portable }

    private init(rows n: Int, cols k: Int, isa: ISA?) {
        precondition(n >= 0 && k >= 0 && n <= Int(Int32.max) && k <= Int(Int32.max), "BF16Matrix \(n) x \(k)")
        rows = n
        cols = k
        self.isa = isa ?? Self.defaultISA
        packedBytes = self.isa.usesF16 ? mumu_f16_packed_bytes(Int32(n), Int32(k)) : mumu_bf16_packed_bytes(Int32(n), Int32(k))
        packed = WeightMemory.allocate(max(64, packedBytes))
    }

    /// From f32 W [rows, cols] row-major (rounded to bf16 or f16, nearest even; inf and NaN kept), for the path
    /// `isa` (default: this CPU's).
    public convenience init(f32 w: UnsafePointer<Float>, rows n: Int, cols k: Int, isa: ISA? = nil) {
        self.init(rows: n, cols: k, isa: isa)
        repack(f32: w)
    }

    /// From bf16 W [rows, cols] row-major (bit patterns: the bf16 layout keeps them as they are), for the path
    /// `isa` (default: this CPU's).
    public convenience init(bf16 w: UnsafePointer<UInt16>, rows n: Int, cols k: Int, isa: ISA? = nil) {
        self.init(rows: n, cols: k, isa: isa)
        if self.isa.usesF16 {
            mumu_f16_pack_bf16(w, Int32(n), Int32(k), packed)
        } else {
            mumu_bf16_pack_bf16(w, Int32(n), Int32(k), packed)
        }
    }

    deinit { WeightMemory.free(packed, max(64, packedBytes)) }

    /// Replaces the whole matrix with f32 W [rows, cols] (rounded as the layout is), in place.
    public func repack(f32 w: UnsafePointer<Float>) {
        if isa.usesF16 {
            mumu_f16_pack_f32(w, Int32(rows), Int32(cols), packed)
        } else {
            mumu_bf16_pack_f32(w, Int32(rows), Int32(cols), packed)
        }
    }

    /// The matrix as f32 [rows, cols] (exact: every bf16 value, and every f16 value times its power-of-two column
    /// scale, is an f32).
    public func unpacked() -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for c in 0..<cols { out[r * cols + c] = value(r, c) }
        }
        return out
    }

    /// W[row, col] as stored.
    public func value(_ row: Int, _ col: Int) -> Float {
        precondition(row >= 0 && row < rows && col >= 0 && col < cols)
        if isa.usesF16 { return mumu_f16_packed_value(packed, Int32(rows), Int32(cols), Int32(row), Int32(col)) }
        return Float(bitPattern: UInt32(mumu_bf16_packed_at(packed, Int32(rows), Int32(cols), Int32(row), Int32(col))) << 16)
    }

    /// C[m, rows] = A[m, cols] · Wᵀ + bias (`accumulate`: C += A · Wᵀ + bias). A rows at stride `lda` (>= cols),
    /// C rows at stride `ldc` (>= rows), bias: `rows` floats or nil. The work is split into one block of rows or
    /// columns per thread (`threads`, default the active processor count) with `concurrentPerform`, on the
    /// matrix's path (`isa`, given when it was packed: tests and benchmarks pack one matrix per path).
    public func multiply(_ a: UnsafePointer<Float>, m: Int, lda: Int, bias: UnsafePointer<Float>?,
                         into c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int? = nil) {
        let n = rows, k = cols
        precondition(m >= 0 && m <= Int(Int32.max) && lda >= k && ldc >= n, "BF16Matrix.multiply m \(m) lda \(lda) ldc \(ldc) for \(n) x \(k)")
        if m == 0 || n == 0 { return }
        let path = isa.rawValue
        let plan = BF16Matrix.split(m: m, n: n, k: k, threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        let scratchBytes = mumu_bf16_gemm_scratch_bytes(Int32(min(m, plan.rowsPerTask)), Int32(k))
        let packed = UnsafeRawPointer(self.packed)
        let acc: Int32 = accumulate ? 1 : 0
        let run = { (task: Int) in
            let (mi, ni) = task.quotientAndRemainder(dividingBy: plan.nTasks)
            let m0 = mi * plan.rowsPerTask, n0 = ni * plan.colsPerTask
            let m1 = min(m, m0 + plan.rowsPerTask), n1 = min(n, n0 + plan.colsPerTask)
            if m0 >= m1 || n0 >= n1 { return }
            let scratch = ScratchPool.shared.take(scratchBytes)
            mumu_bf16_gemm_isa(path, Int32(m), Int32(n), Int32(k), a, lda, packed, bias, c, ldc, acc,
                               Int32(m0), Int32(m1), Int32(n0), Int32(n1), scratch.pointer)
            ScratchPool.shared.give(scratch)
        }
        let tasks = plan.mTasks * plan.nTasks
        if tasks == 1 { run(0) } else { KernelSupport.concurrentPerform(iterations: tasks, run) }
    }

    /// How `multiply` splits C into a grid of mTasks x nTasks blocks (rows in multiples of 32, the AMX
    /// microkernel's height, columns in 32-column panels).
    public struct Split: Equatable, Sendable {
        public var mTasks: Int, nTasks: Int, rowsPerTask: Int, colsPerTask: Int
        public init(mTasks: Int, nTasks: Int, rowsPerTask: Int, colsPerTask: Int) {
            self.mTasks = mTasks; self.nTasks = nTasks; self.rowsPerTask = rowsPerTask; self.colsPerTask = colsPerTask
        }
    }

    /// Among the grids mTasks x nTasks = threads (fewer when there are fewer 32 x 32 tiles than threads), the one
    /// whose largest block has the fewest tiles; of equals, the one that splits rows (columns split repeats the
    /// packing of A in every column block, rows split only re-reads W, which the blocks re-read anyway).
    /// Products under 2^20 multiply-adds run on one thread.
    public static func split(m: Int, n: Int, k: Int, threads: Int) -> Split {
        let panel = Int(MUMU_BF16_PANEL), unit = 32
        let mUnits = (m + unit - 1) / unit, nUnits = (n + panel - 1) / panel
        let t = m * n * max(k, 1) < (1 << 20) ? 1 : max(1, min(threads, mUnits * nUnits))
        var best = Split(mTasks: 1, nTasks: 1, rowsPerTask: m, colsPerTask: nUnits * panel)
        var bestWork = Int.max
        for mt in stride(from: t, through: 1, by: -1) where t % mt == 0 {
            let nt = t / mt
            if mt > mUnits || nt > nUnits { continue }
            let mPer = (mUnits + mt - 1) / mt, nPer = (nUnits + nt - 1) / nt
            let work = mPer * nPer
            if work < bestWork {
                bestWork = work
                best = Split(mTasks: (mUnits + mPer - 1) / mPer, nTasks: (nUnits + nPer - 1) / nPer,
                             rowsPerTask: mPer * unit, colsPerTask: nPer * panel)
            }
        }
        return best
    }
}

/// Scratch buffers for the GEMM's packed A, reused across calls (a fresh allocation of this size is an mmap
/// that page-faults on every call).
final class ScratchPool: @unchecked Sendable {
    static let shared = ScratchPool()
    final class Buffer {
        let pointer: UnsafeMutableRawPointer, bytes: Int
        init(_ bytes: Int) { self.bytes = bytes; pointer = .allocate(byteCount: bytes, alignment: 64) }
        deinit { pointer.deallocate() }
    }
    private var free: [Buffer] = []
    private let lock = NSLock()

    func take(_ bytes: Int) -> Buffer {
        lock.lock()
        if let i = free.lastIndex(where: { $0.bytes >= bytes }) {
            let b = free.remove(at: i)
            lock.unlock()
            return b
        }
        lock.unlock()
        return Buffer(bytes)
    }

    func give(_ b: Buffer) {
        lock.lock()
        defer { lock.unlock() }
        free.append(b)
        if free.count > 2 * max(1, ProcessInfo.processInfo.activeProcessorCount) {
            free.sort { $0.bytes > $1.bytes }
            free.removeLast()
        }
    }
}
