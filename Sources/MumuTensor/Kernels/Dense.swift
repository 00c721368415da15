import CBLAS
import Foundation

/// A weight matrix W [N, K] (PyTorch's Linear layout: one row per output) with an optional bias [N],
/// for every GEMM of the models: C[M, N] = A[M, K] · Wᵀ + bias. A 2-D convolution is the same product
/// once its weight is reordered to [Cout, kh·kw·Cin] (see `convWeight`) and A is an im2col of
/// channels-last activations, so the models have exactly one matrix kernel to make fast.
///
/// Storage is f32 (products through OpenBLAS `cblas_sgemm`) or 16 bits (`BF16Matrix`: packed once, products
/// through mumu's own kernel, activations rounded to bf16, or to f16 on the AVX-512 FP16 path, f32
/// accumulation); the bias stays f32. "bf16" below names that 16-bit precision. The weights
/// are copied out of the checkpoint when the layer is built, so a layer never depends on the mapped file.
public final class DenseWeight: @unchecked Sendable {
    /// Outputs (N) and inputs (K).
    public let rows: Int
    public let cols: Int
    private let weights: UnsafeMutablePointer<Float>?
    private let packed: BF16Matrix?
    private let biasValues: UnsafeMutablePointer<Float>?

    /// Copies `values` ([rows, cols], row-major) and `bias` ([rows]) when given; `bf16` rounds the weights to
    /// bf16 (nearest even) and multiplies with the bf16 kernel.
    public init(f32 values: UnsafePointer<Float>, rows: Int, cols: Int, bias: UnsafePointer<Float>?, bf16: Bool = false) {
        precondition(rows > 0 && cols > 0, "a dense weight needs at least one row and column, got \(rows)x\(cols)")
        self.rows = rows
        self.cols = cols
        if bf16 {
            packed = BF16Matrix(f32: values, rows: rows, cols: cols)
            weights = nil
        } else {
            let w = WeightMemory.allocate(rows * cols * 4).bindMemory(to: Float.self, capacity: rows * cols)
            w.update(from: values, count: rows * cols)
            weights = w
            packed = nil
        }
        biasValues = Self.copy(bias, count: rows)
    }

    /// bf16 weights from bf16 bits ([rows, cols], row-major), packed as they are; `bias` copied when given.
    public init(bf16 values: UnsafePointer<UInt16>, rows: Int, cols: Int, bias: UnsafePointer<Float>?) {
        precondition(rows > 0 && cols > 0, "a dense weight needs at least one row and column, got \(rows)x\(cols)")
        self.rows = rows
        self.cols = cols
        packed = BF16Matrix(bf16: values, rows: rows, cols: cols)
        weights = nil
        biasValues = Self.copy(bias, count: rows)
    }

    /// A heap copy of `count` floats (the bias), or nil.
    private static func copy(_ values: UnsafePointer<Float>?, count: Int) -> UnsafeMutablePointer<Float>? {
        guard let values else { return nil }
        let b = UnsafeMutablePointer<Float>.allocate(capacity: count)
        b.update(from: values, count: count)
        return b
    }

    public convenience init(_ weight: Tensor, bias: Tensor? = nil) {
        precondition(weight.rank == 2, "DenseWeight wants a [N, K] weight, got \(weight.shape)")
        if let bias { precondition(bias.count == weight.shape[0], "bias has \(bias.count) values for \(weight.shape[0]) rows") }
        if let b = bias?.data {
            self.init(f32: weight.data, rows: weight.shape[0], cols: weight.shape[1], bias: b)
        } else {
            self.init(f32: weight.data, rows: weight.shape[0], cols: weight.shape[1], bias: nil)
        }
    }

    deinit {
        if let weights { WeightMemory.free(weights, rows * cols * 4) }
        biasValues?.deallocate()
    }

    /// Low-rank terms added to the product (a LoRA kept unmerged: C += (A · downᵀ) · upᵀ on its rows).
    /// Set and cleared by the sampler between generations, never during one.
    public var lowRank: [LowRankAdapter] = []

    public var hasBias: Bool { biasValues != nil }
    /// Whether the weights are held in 16 bits (`BF16Matrix`: bf16, or f16 on the AVX-512 FP16 path).
    public var isBF16: Bool { packed != nil }
    /// Bytes held (weights and bias).
    public var byteCount: Int { (packed?.byteCount ?? rows * cols * 4) + (hasBias ? rows * 4 : 0) }

    /// C[m, :] (+)= A[m, :] · Wᵀ + bias for m < `m`. A has row stride `lda` (>= cols), C row stride `ldc` (>= rows).
    /// With `accumulate` the product is added to what C holds (a residual), otherwise C is overwritten.
    public func apply(_ a: UnsafePointer<Float>, m: Int, lda: Int, into c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        if m == 0 { return }
        FlopCounter.add(2 * m * rows * cols)
        precondition(lda >= cols && ldc >= rows, "DenseWeight.apply: lda \(lda) / ldc \(ldc) too small for \(rows)x\(cols)")
        defer { for term in lowRank { term.apply(a, m: m, lda: lda, into: c, ldc: ldc) } }
        if let packed {
            packed.multiply(a, m: m, lda: lda, bias: biasValues, into: c, ldc: ldc, accumulate: accumulate)
            return
        }
        guard let weights else { return }
        var beta: Float = accumulate ? 1 : 0
        if let b = biasValues {
            let n = rows
            KernelSupport.parallelChunks(m, minChunk: max(1, (1 << 15) / n)) { rs in
                for r in rs {
                    let row = c + r * ldc
                    if accumulate { for j in 0..<n { row[j] += b[j] } } else { row.update(from: b, count: n) }
                }
            }
            beta = 1
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(rows), Int32(cols), 1,
                    a, Int32(lda), weights, Int32(cols), beta, c, Int32(ldc))
    }

    /// Replaces rows `rows` of W with `values` ([rows.count, cols] in this layer's layout, i.e. already reordered
    /// for a convolution), in place (bf16 weights are repacked).
    public func setRows(_ rows: Range<Int>, from values: UnsafePointer<Float>) {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= self.rows, "setRows \(rows) of \(self.rows)")
        if let weights {
            (weights + rows.lowerBound * cols).update(from: values, count: rows.count * cols)
        } else if let packed {
            if rows == 0..<self.rows {
                packed.repack(f32: values)
            } else {
                var all = packed.unpacked()
                all.withUnsafeMutableBufferPointer { ($0.baseAddress! + rows.lowerBound * cols).update(from: values, count: rows.count * cols) }
                packed.repack(f32: all)
            }
        }
    }

    /// Replaces bias entries `rows` with `values`.
    public func setBias(_ rows: Range<Int>, from values: UnsafePointer<Float>) {
        guard let biasValues else { preconditionFailure("setBias on a layer without bias") }
        (biasValues + rows.lowerBound).update(from: values, count: rows.count)
    }

    /// x [..., K] -> [..., N].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 1 && x.shape[x.rank - 1] == cols, "dense layer takes \(cols) features, input is \(x.shape)")
        var shape = x.shape
        shape[shape.count - 1] = rows
        var out = Tensor(uninitialized: shape)
        let m = x.count / cols
        x.data.withUnsafeBufferPointer { xb in
            out.data.withUnsafeMutableBufferPointer { ob in
                apply(xb.baseAddress!, m: m, lda: cols, into: ob.baseAddress!, ldc: rows, accumulate: false)
            }
        }
        return out
    }

    /// y += x · Wᵀ + bias, with x [..., K] and y [..., N] (a residual connection in one pass).
    public func apply(_ x: Tensor, addingInto y: inout Tensor) {
        precondition(x.rank >= 1 && x.shape[x.rank - 1] == cols, "dense layer takes \(cols) features, input is \(x.shape)")
        let m = x.count / cols
        precondition(y.count == m * rows, "dense layer output \(y.shape) does not hold \(m) rows of \(rows)")
        x.data.withUnsafeBufferPointer { xb in
            y.data.withUnsafeMutableBufferPointer { yb in
                apply(xb.baseAddress!, m: m, lda: cols, into: yb.baseAddress!, ldc: rows, accumulate: true)
            }
        }
    }

    /// A PyTorch conv weight [Cout, Cin, kh, kw] reordered to [Cout, kh, kw, Cin]: the row layout of a
    /// channels-last im2col, so a convolution is `apply` on the im2col rows.
    public static func convWeight(_ w: UnsafePointer<Float>, cout: Int, cin: Int, kh: Int, kw: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: cout * cin * kh * kw) { buffer, count in
            convWeight(w, cout: cout, cin: cin, kh: kh, kw: kw, into: buffer.baseAddress!)
            count = cout * cin * kh * kw
        }
    }

    /// The same reordering into a caller's buffer of cout·cin·kh·kw floats.
    public static func convWeight(_ w: UnsafePointer<Float>, cout: Int, cin: Int, kh: Int, kw: Int, into o: UnsafeMutablePointer<Float>) {
        for co in 0..<cout {
            for ci in 0..<cin {
                for ky in 0..<kh {
                    for kx in 0..<kw {
                        o[((co * kh + ky) * kw + kx) * cin + ci] = w[((co * cin + ci) * kh + ky) * kw + kx]
                    }
                }
            }
        }
    }
}

extension DenseWeight {
    /// Whether the bf16 kernel has a hardware path here (AMX, AVX-512 BF16, or AVX2 + FMA, as `MUMU_GEMM_ISA`
    /// allows), so bf16 weights cost little speed: the default precision of MUMU's encoder, whose size is what
    /// matters (Idefics2-8b is 16 GB in bf16, 32 in f32). f32 where only the portable C path exists (4-5x slower
    /// than sgemm).
    public static var bf16HasHardwarePath: Bool { BF16Matrix.defaultISA != .portable }

    /// Whether bf16 is the faster precision here: AMX, AVX-512 FP16 or AVX-512 BF16 products (`MUMU_GEMM_ISA`
    /// allowing), the default precision of generation then. With AVX2 alone the products run at 0.84-1.21x sgemm and SDXL's UNet
    /// (batch 2) takes 1.07x (512) and 1.10x (1024) of its f32 time (docs/benchmarks.md): f32 is the default there
    /// and bf16 the half-memory choice.
    public static var bf16IsFaster: Bool { BF16Matrix.defaultISA.rawValue >= BF16Matrix.ISA.avx512bf16.rawValue }
}

/// One unmerged low-rank term of a layer: outputs `rowOffset ..< rowOffset + up.count / rank` gain
/// (A · downᵀ) · upᵀ, with down [rank, K] in the layer's input layout and up [rows, rank] (strength and
/// scale folded in).
public final class LowRankAdapter: @unchecked Sendable {
    public let rowOffset: Int
    public let rows: Int
    public let rank: Int
    public let cols: Int
    let down: [Float]
    let up: [Float]

    public init(rowOffset: Int, rows: Int, rank: Int, cols: Int, down: [Float], up: [Float]) {
        precondition(down.count == rank * cols && up.count == rows * rank && rank > 0, "LowRankAdapter: down \(down.count) / up \(up.count) for rank \(rank), \(rows) x \(cols)")
        self.rowOffset = rowOffset
        self.rows = rows
        self.rank = rank
        self.cols = cols
        self.down = down
        self.up = up
    }

    func apply(_ a: UnsafePointer<Float>, m: Int, lda: Int, into c: UnsafeMutablePointer<Float>, ldc: Int) {
        FlopCounter.add(2 * m * rank * (cols + rows))
        let t = UnsafeMutablePointer<Float>.allocate(capacity: m * rank)
        defer { t.deallocate() }
        down.withUnsafeBufferPointer { d in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(rank), Int32(cols), 1,
                        a, Int32(lda), d.baseAddress!, Int32(cols), 0, t, Int32(rank))
        }
        up.withUnsafeBufferPointer { u in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(rows), Int32(rank), 1,
                        t, Int32(rank), u.baseAddress!, Int32(rank), 1, c + rowOffset, Int32(ldc))
        }
    }
}
