import CMumuKernels
import Foundation
import MumuTensor
import MumuTestSupport
import XCTest

/// The 16-bit-weight GEMM (CMumuKernels/gemm_bf16.c and gemm_f16.c, BF16Matrix) on every path this CPU has.
///
/// Tolerance of the bf16 layout, against a double-precision product of the bf16-rounded operands: a product of
/// two bf16 values is exact in f32 (8 + 8 significant bits), so the only errors are the f32 additions: summing K
/// products (in any order, in blocks, two per vdpbf16ps) plus C and the bias is at most (K + 2) additions, each
/// off by at most 2^-24 of a partial sum no larger than S = sum |a||w| + |c0| + |bias|. So |C - ref| <=
/// (K + 2) * 2^-24 * S; the tests allow twice that, (K + 2) * 2^-23 * S. (The bf16 instructions flush
/// subnormals; the data here has none.)
///
/// Tolerance of the f16 layout (AVX-512 FP16), against the product of the unrounded f32 operands: each operand
/// is scaled by a power of two and rounded to f16 (relative 2^-11 each, so 2^-10 + 2^-22 per product), each f16
/// multiply-add rounds its sum (2^-11 of a partial sum of at most 64 products: 64 * 2^-11 of S at most), then
/// the f32 additions as above (and underflow below 2^-25 of a chunk's largest product, which this data does
/// not reach). So |C - exact| <= (2^-10 + 64 * 2^-11 + (K + 2) * 2^-23) * S: a worst case 16x the typical error,
/// which `testSDXLShapeMatchesPortable` measures against the bf16 layout's.
final class BF16GemmTests: XCTestCase {
    static let isas = BF16Matrix.ISA.allCases.filter(\.isAvailable)


    /// The error bound per unit of S for a path (see above).
    static func factor(_ isa: BF16Matrix.ISA, k: Int) -> Double {
        isa.usesF16 ? 0x1p-10 + 64 * 0x1p-11 + Double(k + 2) * 0x1p-23 : Double(k + 2) * 0x1p-23
    }

    static func bf16(_ x: Float) -> Float {
        var v = x, h: UInt16 = 0
        mumu_f32_to_bf16(&v, &h, 1)
        return Float(bitPattern: UInt32(h) << 16)
    }

    /// Reference C (double) and the bound S per element, for A [m, k] (stride lda), W [n, k], optional bias, C0:
    /// the product of the operands as `isa`'s layout sees them (bf16-rounded, or as they are for f16).
    static func reference(m: Int, n: Int, k: Int, a: [Float], lda: Int, w: [Float], bias: [Float]?,
                          c0: [Float]?, ldc: Int, for isa: BF16Matrix.ISA = .portable) -> (value: [Double], scale: [Double]) {
        let ab = isa.usesF16 ? a : a.map(bf16), wb = isa.usesF16 ? w : w.map(bf16)
        var value = [Double](repeating: 0, count: m * n), scale = value
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0, sa = 0.0
                for p in 0..<k {
                    let prod = Double(ab[i * lda + p]) * Double(wb[j * k + p])
                    s += prod
                    sa += abs(prod)
                }
                if let bias { s += Double(bias[j]); sa += abs(Double(bias[j])) }
                if let c0 { s += Double(c0[i * ldc + j]); sa += abs(Double(c0[i * ldc + j])) }
                value[i * n + j] = s
                scale[i * n + j] = sa
            }
        }
        return (value, scale)
    }

    static func check(_ c: [Float], ldc: Int, m: Int, n: Int, k: Int, ref: (value: [Double], scale: [Double]),
                      isa: BF16Matrix.ISA = .portable, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        let factor = factor(isa, k: k)
        var failures = 0
        for i in 0..<m {
            for j in 0..<n {
                let got = Double(c[i * ldc + j]), want = ref.value[i * n + j]
                let tol = factor * ref.scale[i * n + j] + 1e-30
                if !(abs(got - want) <= tol) {
                    failures += 1
                    if failures <= 3 { XCTFail("\(label): C[\(i), \(j)] = \(got), want \(want) +- \(tol)", file: file, line: line) }
                }
            }
        }
        if failures > 3 { XCTFail("\(label): \(failures) elements out of tolerance", file: file, line: line) }
    }

    /// Every combination of M, N, K in {1, 2, 3, 7, 17, 31, 33, 77, 100}, on every path, with bias or not,
    /// accumulating or not, and strides wider than the rows, in a rotation.
    func testSmallAndOddShapes() {
        let sizes = [1, 2, 3, 7, 17, 31, 33, 77, 100]
        var rng = SeededRNG(seed: 1)
        var index = 0
        for m in sizes { for n in sizes { for k in sizes {
            index += 1
            let useBias = index % 2 == 0, accumulate = index % 3 == 0, wide = index % 5 < 2
            let lda = k + (wide ? 5 : 0), ldc = n + (wide ? 3 : 0)
            let a = rng.floats(m * lda), w = rng.floats(n * k, scale: 0.5)
            let bias = useBias ? rng.floats(n) : nil
            let c0 = rng.floats(m * ldc)
            for isa in Self.isas {
                let ref = Self.reference(m: m, n: n, k: k, a: a, lda: lda, w: w, bias: bias,
                                         c0: accumulate ? c0 : nil, ldc: ldc, for: isa)
                let matrix = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k, isa: isa) }
                var c = c0
                let b = bias ?? []
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                    matrix.multiply(ap.baseAddress!, m: m, lda: lda, bias: useBias ? bp.baseAddress! : nil,
                                    into: cp.baseAddress!, ldc: ldc, accumulate: accumulate, threads: 1)
                } } }
                Self.check(c, ldc: ldc, m: m, n: n, k: k, ref: ref, isa: isa,
                           "\(isa.name) m \(m) n \(n) k \(k) bias \(useBias) acc \(accumulate) lda \(lda) ldc \(ldc)")
                // Columns past n in the wider C rows are untouched.
                for i in 0..<m { for j in n..<ldc where c[i * ldc + j] != c0[i * ldc + j] {
                    XCTFail("\(isa.name) wrote C[\(i), \(j)] past n \(n)")
                } }
            }
        } } }
    }

    /// Blocks [m0, m1) x [n0, n1) that split rows anywhere and columns at panel boundaries compose the whole
    /// product, on every path, through the C API (each block with its own scratch). The last shapes take several
    /// row blocks and (K > 3072) several K slices inside one call.
    func testBlockRanges() {
        var rng = SeededRNG(seed: 2)
        for (m, n, k) in [(100, 100, 77), (77, 33, 301), (33, 77, 1), (45, 130, 600), (300, 96, 1111), (600, 40, 3501)] {
            let lda = k + 3, ldc = n + 1
            let a = rng.floats(m * lda), w = rng.floats(n * k), bias = rng.floats(n), c0 = rng.floats(m * ldc)
            var bf16Packed = [UInt8](repeating: 0, count: mumu_bf16_packed_bytes(Int32(n), Int32(k)))
            mumu_bf16_pack_f32(w, Int32(n), Int32(k), &bf16Packed)
            var f16Packed = [UInt8](repeating: 0, count: mumu_f16_packed_bytes(Int32(n), Int32(k)))
            mumu_f16_pack_f32(w, Int32(n), Int32(k), &f16Packed)
            var scratch = [UInt8](repeating: 0, count: mumu_bf16_gemm_scratch_bytes(Int32(m), Int32(k)))
            for accumulate in [false, true] {
                for isa in Self.isas {
                    let ref = Self.reference(m: m, n: n, k: k, a: a, lda: lda, w: w, bias: bias,
                                             c0: accumulate ? c0 : nil, ldc: ldc, for: isa)
                    let packed = isa.usesF16 ? f16Packed : bf16Packed
                    var c = c0
                    let mSplits = [0, 1, m / 2 + 3, m - 1, m].filter { $0 >= 0 && $0 <= m }
                    let nSplits = Array(stride(from: 0, to: n, by: 32)) + [n]
                    for (mi, m0) in mSplits.dropLast().enumerated() {
                        let m1 = max(m0, mSplits[mi + 1])
                        for (ni, n0) in nSplits.dropLast().enumerated() {
                            mumu_bf16_gemm_isa(isa.rawValue, Int32(m), Int32(n), Int32(k), a, lda, packed, bias, &c, ldc,
                                               accumulate ? 1 : 0, Int32(m0), Int32(m1), Int32(n0), Int32(nSplits[ni + 1]),
                                               &scratch)
                        }
                    }
                    Self.check(c, ldc: ldc, m: m, n: n, k: k, ref: ref, isa: isa, "blocks \(isa.name) \(m)x\(n)x\(k) acc \(accumulate)")
                }
            }
        }
    }

    /// bf16 layout: packing f32 and packing its bf16 rounding give the same bytes; the layout reads back as W.
    func testPackF32MatchesPackBF16() {
        var rng = SeededRNG(seed: 3)
        for (n, k) in [(1, 1), (3, 7), (33, 31), (77, 100), (320, 289)] {
            var w = rng.floats(n * k, scale: 3)
            if n * k > 4 { w[1] = .nan; w[2] = .infinity; w[3] = -.infinity; w[4] = Float(bitPattern: 0x0000_1234) }   // subnormal, kept by the packing
            var h = [UInt16](repeating: 0, count: n * k)
            mumu_f32_to_bf16(w, &h, n * k)
            let bytes = mumu_bf16_packed_bytes(Int32(n), Int32(k))
            var p1 = [UInt8](repeating: 1, count: bytes), p2 = [UInt8](repeating: 2, count: bytes)
            mumu_bf16_pack_f32(w, Int32(n), Int32(k), &p1)
            mumu_bf16_pack_bf16(h, Int32(n), Int32(k), &p2)
            XCTAssertEqual(p1, p2, "\(n)x\(k)")
            let matrix = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k, isa: .portable) }
            let fromBF16 = h.withUnsafeBufferPointer { BF16Matrix(bf16: $0.baseAddress!, rows: n, cols: k, isa: .portable) }
            XCTAssertEqual(matrix.byteCount, bytes)
            for r in 0..<n { for col in 0..<k {
                XCTAssertEqual(matrix.value(r, col).bitPattern >> 16, UInt32(h[r * k + col]))
                XCTAssertEqual(fromBF16.value(r, col).bitPattern >> 16, UInt32(h[r * k + col]))
            } }
        }
    }

    /// f16 layout: each value reads back within 2^-11 of W (nearest even after a power-of-two scale; 2^-25 of the
    /// scale where f16 is subnormal), and W's bf16 rounding exactly where f16 is normal (8 significant bits fit
    /// in 11); a column holding inf or NaN keeps them (unscaled); an all-zero column and f32 subnormals read
    /// back as zero. Any CPU packs it (the products need AVX-512 FP16).
    func testF16Layout() {
        var rng = SeededRNG(seed: 7)
        for (n, k) in [(1, 1), (3, 7), (33, 31), (77, 100), (320, 289)] {
            var w = rng.floats(n * k, scale: 3)
            if n * k > 4 { w[1] = .nan; w[2] = .infinity; w[3] = -.infinity; w[4] = Float(bitPattern: 0x0000_1234) }
            if n >= 3 { for e in 0..<k { w[2 * k + e] = 0 } }
            let matrix = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k, isa: .avx512fp16) }
            XCTAssertEqual(matrix.byteCount, mumu_f16_packed_bytes(Int32(n), Int32(k)))
            var h = [UInt16](repeating: 0, count: n * k)
            mumu_f32_to_bf16(w, &h, n * k)
            let fromBF16 = h.withUnsafeBufferPointer { BF16Matrix(bf16: $0.baseAddress!, rows: n, cols: k, isa: .avx512fp16) }
            for r in 0..<n { for col in 0..<k {
                let x = w[r * k + col], got = matrix.value(r, col), fromH = fromBF16.value(r, col)
                let hx = Float(bitPattern: UInt32(h[r * k + col]) << 16)
                if x.isNaN {
                    XCTAssertTrue(got.isNaN && fromH.isNaN, "[\(r), \(col)]")
                } else if x.isInfinite || x.bitPattern == 0x0000_1234 {
                    XCTAssertEqual(got, x.isInfinite ? x : 0, "[\(r), \(col)]")
                    XCTAssertEqual(fromH, x.isInfinite ? x : 0, "[\(r), \(col)]")
                } else {
                    // The column's scale: 2^e above its largest |value| (1 where inf or NaN is in it); below
                    // 2^-14 of it f16 is subnormal, with steps of 2^-24 of it.
                    let column = w[(r * k)..<(r * k + k)]
                    let top = column.allSatisfy(\.isFinite) ? column.map(abs).max()! : 0
                    let scale: Float = top > 0 ? Float(sign: .plus, exponent: top.exponent + 1, significand: 1) : 1
                    XCTAssertLessThanOrEqual(abs(got - x), max(abs(x) * 0x1p-11, scale * 0x1p-25),
                                             "[\(r), \(col)] \(got) for \(x)")
                    if abs(hx) >= scale * 0x1p-14 { XCTAssertEqual(fromH, hx, "[\(r), \(col)] from bf16") }
                }
            } }
        }
    }

    /// The f16 layout multiplies on any CPU: with AVX-512 FP16 on its own path, elsewhere on the scalar loop
    /// mumu_bf16_gemm_isa falls back to (never chosen by default there); within the f16 bound either way.
    func testF16LayoutMultipliesEverywhere() {
        let m = 37, n = 45, k = 130
        var rng = SeededRNG(seed: 8)
        let a = rng.floats(m * k), w = rng.floats(n * k, scale: 0.3), bias = rng.floats(n), c0 = rng.floats(m * n)
        let matrix = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k, isa: .avx512fp16) }
        for accumulate in [false, true] {
            var c = c0
            matrix.multiply(a, m: m, lda: k, bias: bias, into: &c, ldc: n, accumulate: accumulate, threads: 1)
            let ref = Self.reference(m: m, n: n, k: k, a: a, lda: k, w: w, bias: bias, c0: accumulate ? c0 : nil,
                                     ldc: n, for: .avx512fp16)
            Self.check(c, ldc: n, m: m, n: n, k: k, ref: ref, isa: .avx512fp16,
                       "f16 layout (\(BF16Matrix.ISA.avx512fp16.isAvailable ? "avx512fp16" : "scalar")) acc \(accumulate)")
        }
    }

    /// NaN and infinity in W reach the outputs that use them, on every path; other outputs stay finite.
    func testNaNAndInfinityPropagate() {
        let m = 20, n = 40, k = 37
        var rng = SeededRNG(seed: 4)
        var a = rng.floats(m * k).map { abs($0) + 0.25 }   // positive, so an infinite weight gives an infinite sum
        var w = rng.floats(n * k, scale: 0.1)
        w[5 * k + 3] = .nan
        w[17 * k + 36] = .infinity
        w[33 * k + 0] = -.infinity
        a[7 * k + 36] = 0                                   // inf * 0 = NaN in row 7, column 17
        for isa in Self.isas {
            let matrix = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k, isa: isa) }
            var c = [Float](repeating: 0, count: m * n)
            matrix.multiply(a, m: m, lda: k, bias: nil, into: &c, ldc: n, accumulate: false, threads: 1)
            for i in 0..<m {
                for j in 0..<n {
                    let v = c[i * n + j]
                    switch j {
                    case 5: XCTAssertTrue(v.isNaN, "\(isa.name) [\(i), 5] \(v)")
                    case 17 where i == 7: XCTAssertTrue(v.isNaN, "\(isa.name) [7, 17] \(v)")
                    case 17: XCTAssertEqual(v, .infinity, "\(isa.name) [\(i), 17]")
                    case 33: XCTAssertEqual(v, -.infinity, "\(isa.name) [\(i), 33]")
                    default: XCTAssertTrue(v.isFinite, "\(isa.name) [\(i), \(j)] \(v)")
                    }
                }
            }
        }
    }

    /// An SDXL-like shape (a 3x3 convolution at level 0 over 300 output pixels) through `multiply` on the default
    /// path and threads. A bf16-layout default equals the portable path within the tolerance (twice: both are off
    /// the exact value). An f16 default (AVX-512 FP16) is within its own bound of the exact product of the f32
    /// operands, and closer to it than the bf16 layout (root mean square), as gemm_f16.c claims.
    func testSDXLShapeMatchesPortable() {
        let m = 300, n = 320, k = 2880
        var rng = SeededRNG(seed: 5)
        let a = rng.floats(m * k), w = rng.floats(n * k, scale: 0.05), bias = rng.floats(n)
        let matrix = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k) }
        let bf16 = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k, isa: .portable) }
        var fast = [Float](repeating: 0, count: m * n), portable = fast
        matrix.multiply(a, m: m, lda: k, bias: bias, into: &fast, ldc: n, accumulate: false)
        bf16.multiply(a, m: m, lda: k, bias: bias, into: &portable, ldc: n, accumulate: false)
        let f16 = matrix.isa.usesF16
        let ab = f16 ? a : a.map(Self.bf16), wb = f16 ? w : w.map(Self.bf16)
        var worst = 0.0, squares = (fast: 0.0, portable: 0.0)
        for i in 0..<m {
            for j in 0..<n {
                var s = abs(Double(bias[j])), exact = Double(bias[j])
                for p in 0..<k {
                    s += abs(Double(ab[i * k + p]) * Double(wb[j * k + p]))
                    exact += Double(a[i * k + p]) * Double(w[j * k + p])
                }
                let tol = f16 ? Self.factor(matrix.isa, k: k) * s : 2 * Double(k + 2) * 0x1p-23 * s
                let d = abs(Double(fast[i * n + j]) - (f16 ? exact : Double(portable[i * n + j])))
                XCTAssertLessThanOrEqual(d, tol, "[\(i), \(j)]")
                worst = max(worst, d / s)
                squares.fast += pow(Double(fast[i * n + j]) - exact, 2)
                squares.portable += pow(Double(portable[i * n + j]) - exact, 2)
            }
        }
        let rms = (fast: (squares.fast / Double(m * n)).squareRoot(), portable: (squares.portable / Double(m * n)).squareRoot())
        if f16 { XCTAssertLessThan(rms.fast, rms.portable, "f16 layout less exact than bf16") }
        print("BF16Matrix \(matrix.isa.name) \(m)x\(n)x\(k): max |diff| / sum|a||w| = \(worst) against "
              + "\(f16 ? "the exact product" : "portable"); RMS error against the exact product: \(rms.fast) "
              + "(portable bf16 \(rms.portable))")
    }

    /// The default path is the best one the CPU has, capped by MUMU_GEMM_ISA when that is set (run the tests with
    /// MUMU_GEMM_ISA=portable or avx512bf16 to check the cap).
    func testDefaultPathAndEnvironmentCap() {
        let best = Self.isas.last!
        let env = ProcessInfo.processInfo.environment["MUMU_GEMM_ISA"]
        let cap = BF16Matrix.ISA.allCases.first { $0.name == env } ?? best
        XCTAssertEqual(BF16Matrix.defaultISA.rawValue, min(cap.rawValue, best.rawValue))
        XCTAssertEqual(BF16Matrix.isa, BF16Matrix.defaultISA.name)
        print("BF16Matrix: paths here \(Self.isas.map(\.name)), default \(BF16Matrix.isa)")
    }

    /// MUMU_GEMM_ISA that is not a path, or names one the CPU lacks, is reported with the path taken; unset or a
    /// path the CPU has is not.
    func testEnvironmentNote() {
        XCTAssertNil(BF16Matrix.environmentNote(nil))
        XCTAssertNil(BF16Matrix.environmentNote("portable"))
        let bad = BF16Matrix.environmentNote("avx9000")
        XCTAssertEqual(bad, "MUMU_GEMM_ISA=avx9000 is not one of portable, avx2, avx512bf16, avx512fp16, amx: ignored, "
                       + "the GEMM takes \(BF16Matrix.isa)")
        for isa in BF16Matrix.ISA.allCases {
            let note = BF16Matrix.environmentNote(isa.name)
            if isa.isAvailable { XCTAssertNil(note, isa.name) } else {
                XCTAssertEqual(note, "MUMU_GEMM_ISA=\(isa.name): this CPU has no \(isa.name) path, the GEMM takes \(BF16Matrix.isa)")
            }
        }
    }

    /// The split gives both threads equal work for tall and for short M.
    func testSplit() {
        XCTAssertEqual(BF16Matrix.split(m: 8192, n: 320, k: 2880, threads: 2),
                       .init(mTasks: 2, nTasks: 1, rowsPerTask: 4096, colsPerTask: 320))
        XCTAssertEqual(BF16Matrix.split(m: 154, n: 2048, k: 2048, threads: 2),
                       .init(mTasks: 1, nTasks: 2, rowsPerTask: 160, colsPerTask: 1024))
        XCTAssertEqual(BF16Matrix.split(m: 2, n: 1280, k: 1280, threads: 2),
                       .init(mTasks: 1, nTasks: 2, rowsPerTask: 32, colsPerTask: 640))
        XCTAssertEqual(BF16Matrix.split(m: 2, n: 8, k: 3, threads: 2).mTasks * BF16Matrix.split(m: 2, n: 8, k: 3, threads: 2).nTasks, 1)
        // Any split covers C: the blocks of a 3-thread run equal the 1-thread result within the tolerance.
        let m = 97, n = 200, k = 300
        var rng = SeededRNG(seed: 6)
        let a = rng.floats(m * k), w = rng.floats(n * k)
        let matrix = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k) }
        let ref = Self.reference(m: m, n: n, k: k, a: a, lda: k, w: w, bias: nil, c0: nil, ldc: n, for: matrix.isa)
        for threads in [1, 2, 3, 5] {
            var c = [Float](repeating: .nan, count: m * n)
            matrix.multiply(a, m: m, lda: k, bias: nil, into: &c, ldc: n, accumulate: false, threads: threads)
            Self.check(c, ldc: n, m: m, n: n, k: k, ref: ref, isa: matrix.isa, "threads \(threads)")
        }
    }
}
