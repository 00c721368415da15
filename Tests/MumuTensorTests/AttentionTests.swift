import CMumuKernels
import Foundation
import MumuTensor
import XCTest

/// The fused attention kernel (CMumuKernels/attention.c, NN.attention) on every path this CPU has and both
/// precisions, against a double-precision reference computed here: full scores q·kᵀ/sqrt(d) with the masks, a
/// softmax with the maximum subtracted, the product with v.
///
/// Tolerances, relative to max |v| (every output is a convex combination of rows of v, so |out| <= max |v|):
/// - f32: 1e-5. The kernel's errors are f32 roundings: the d-term dot products (inputs in [-1, 1), scores of
///   order 1, so ~d·2^-24 absolute), the exponential (a few ulp), the Tk-term weighted sums and the final
///   division; for d <= 512 and Tk <= 4096 these stay near 1e-6 relative (measured: at most 1.4e-6).
/// - bf16: the reference uses the same bf16-rounded q, k, v (exact in double), so what is left is the rounding of
///   the softmax numerators P to bf16 before P·V: each weight off by at most 2^-9 relative moves the output by at
///   most 2^-9·max|v| (the row sum l is taken in f32 before rounding). Allowed: 2^-8·max|v| (twice that bound, for
///   the f32 roundings on top; measured: at most 1.2e-3).
/// - f16: against the f32 reference (the kernel's power-of-two scalings before rounding cannot be replayed
///   exactly here). q, k and v are rounded to f16 (2^-12 relative, bf16's is 2^-9), QKᵀ sums each 64-channel
///   piece in f16 (every addition rounded at 2^-12 of a partial sum) and PV each 64-key block, P is rounded to f16.
///   These are random-walk errors of a few 2^-12 on scores of order 1 and on weights below 1; allowed, as for
///   bf16: 2^-8·max|v| (measured on this file's cases: see the printed errors, at most 1.0e-3 on an Emerald Rapids
///   Xeon, the portable fallback's f32 arithmetic at most 6e-4).
final class AttentionTests: XCTestCase {
    struct Rng {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func float() -> Float { Float(Int64(bitPattern: next()) >> 40) / Float(1 << 23) }
        mutating func tensor(_ shape: [Int], scale: Float = 1) -> Tensor {
            Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in float() * scale })
        }
    }

    static func bf16(_ x: Float) -> Float {
        var v = x, h: UInt16 = 0
        mumu_f32_to_bf16(&v, &h, 1)
        return Float(bitPattern: UInt32(h) << 16)
    }

    /// Reference out [B, Tq, C] in double.
    static func reference(q: Tensor, k: Tensor, v: Tensor, heads: Int, kvHeads: Int, causal: Bool, window: Int,
                          bf16: Bool) -> [Double] {
        let (b, tq, c) = (q.shape[0], q.shape[1], q.shape[2])
        let (tk, ckv) = (k.shape[1], k.shape[2])
        let d = c / heads, group = heads / kvHeads
        let round: (Float) -> Double = bf16 ? { Double(Self.bf16($0)) } : { Double($0) }
        let qd = q.data.map(round), kd = k.data.map(round), vd = v.data.map(round)
        var out = [Double](repeating: 0, count: b * tq * c)
        var s = [Double](repeating: 0, count: tk)
        let scale = 1 / Double(d).squareRoot()
        for n in 0..<b {
            for h in 0..<heads {
                let g = h / group
                for i in 0..<tq {
                    let pos = i + tk - tq
                    var m = -Double.infinity
                    for j in 0..<tk {
                        if (causal && j > pos) || (window > 0 && j <= pos - window) { s[j] = -.infinity; continue }
                        var acc = 0.0
                        let qo = (n * tq + i) * c + h * d, ko = (n * tk + j) * ckv + g * d
                        for e in 0..<d { acc += qd[qo + e] * kd[ko + e] }
                        s[j] = acc * scale
                        m = max(m, s[j])
                    }
                    if m == -.infinity { continue }
                    var l = 0.0
                    for j in 0..<tk { s[j] = s[j] == -.infinity ? 0 : Foundation.exp(s[j] - m); l += s[j] }
                    for e in 0..<d {
                        var acc = 0.0
                        for j in 0..<tk where s[j] != 0 { acc += s[j] * vd[(n * tk + j) * ckv + g * d + e] }
                        out[(n * tq + i) * c + h * d + e] = acc / l
                    }
                }
            }
        }
        return out
    }

    static let paths = NN.AttentionPath.allCases

    struct Case {
        var b = 1
        var tq: Int
        var tk: Int
        var d: Int
        var heads = 1
        var kvHeads: Int? = nil
        var causal = false
        var window = 0
    }

    func run(_ t: Case, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var rng = Rng(state: seed)
        let kvh = t.kvHeads ?? t.heads
        let q = rng.tensor([t.b, t.tq, t.heads * t.d]), k = rng.tensor([t.b, t.tk, kvh * t.d])
        let v = rng.tensor([t.b, t.tk, kvh * t.d])
        let vmax = Double(v.data.map(abs).max() ?? 1)
        for precision in [NN.AttentionPrecision.f32, .bf16, .f16] {
            let ref = Self.reference(q: q, k: k, v: v, heads: t.heads, kvHeads: kvh, causal: t.causal,
                                     window: t.window, bf16: precision == .bf16)
            let tol = (precision == .f32 ? 1e-5 : 1.0 / 256) * vmax
            for path in Self.paths where path.isAvailable(precision) || path == .portable {
                let got = NN.attention(q: q, k: k, v: v, heads: t.heads, kvHeads: t.kvHeads, causal: t.causal,
                                       window: t.window, precision: precision, path: path)
                XCTAssertEqual(got.shape, q.shape, file: file, line: line)
                var err = 0.0
                for i in 0..<ref.count {
                    let e = abs(Double(got.data[i]) - ref[i])
                    if !(e <= err) { err = e.isNaN ? .infinity : e }
                }
                let label = "\(precision) \(path.name) B \(t.b) Tq \(t.tq) Tk \(t.tk) d \(t.d) heads \(t.heads)/\(kvh) causal \(t.causal) window \(t.window)"
                XCTAssertLessThanOrEqual(err, tol, "\(label): max abs error \(err)", file: file, line: line)
                print("AttentionTests \(label): max abs error \(err) (tolerance \(tol))")
            }
        }
    }

    func testHeadDims() {
        run(Case(tq: 77, tk: 77, d: 16, heads: 3), seed: 1)
        run(Case(b: 2, tq: 77, tk: 77, d: 32, heads: 2), seed: 2)
        run(Case(tq: 333, tk: 77, d: 64, heads: 2), seed: 3)
        run(Case(tq: 1, tk: 333, d: 72, heads: 2), seed: 4)
        run(Case(tq: 130, tk: 70, d: 128, heads: 2), seed: 5)
        run(Case(tq: 97, tk: 130, d: 512, heads: 1), seed: 6)
    }

    func testLongSequences() {
        run(Case(tq: 50, tk: 4096, d: 64, heads: 1), seed: 7)
        run(Case(tq: 4096, tk: 33, d: 64, heads: 1), seed: 8)
    }

    func testCausal() {
        run(Case(b: 2, tq: 77, tk: 77, d: 64, heads: 2, causal: true), seed: 9)
        // Tq < Tk: the queries are the last Tq positions; Tq > Tk: the first Tq - Tk rows see no key (zero).
        run(Case(tq: 50, tk: 333, d: 32, heads: 2, causal: true), seed: 10)
        run(Case(tq: 333, tk: 50, d: 16, heads: 1, causal: true), seed: 11)
    }

    func testSlidingWindowAndGQA() {
        run(Case(tq: 200, tk: 200, d: 128, heads: 4, kvHeads: 1, causal: true, window: 50), seed: 12)
        run(Case(tq: 150, tk: 150, d: 64, heads: 4, kvHeads: 2, causal: true, window: 7), seed: 13)
        run(Case(b: 2, tq: 100, tk: 130, d: 72, heads: 6, kvHeads: 3), seed: 14)
    }

    /// The fused-projection entry (CLIP's qkv [B, T, 3C]) equals attention on the three slices.
    func testFusedQKV() {
        var rng = Rng(state: 15)
        let (b, t, c, heads) = (2, 77, 96, 3)
        let qkv = rng.tensor([b, t, 3 * c])
        func slice(_ o: Int) -> Tensor {
            var x = Tensor(zeros: [b, t, c])
            for r in 0..<(b * t) { for e in 0..<c { x.data[r * c + e] = qkv.data[r * 3 * c + o * c + e] } }
            return x
        }
        for precision in [NN.AttentionPrecision.f32, .bf16, .f16] {
            let want = NN.attention(q: slice(0), k: slice(1), v: slice(2), heads: heads, causal: true, precision: precision)
            let got = NN.attention(qkv: qkv, heads: heads, causal: true, precision: precision)
            XCTAssertEqual(got.data, want.data, "\(precision)")
        }
    }

    /// The default path is the best one the CPU has, capped by MUMU_GEMM_ISA like the bf16 GEMM (its avx512bf16
    /// and avx512fp16 both cap at avx512, its amx at amx).
    func testDefaultPath() {
        let cap: Int32, pathCap: Int32
        switch ProcessInfo.processInfo.environment["MUMU_GEMM_ISA"] {
        case "portable": (cap, pathCap) = (0, 0)
        case "avx2": (cap, pathCap) = (1, 1)
        case "avx512bf16": (cap, pathCap) = (2, 2)
        case "avx512fp16": (cap, pathCap) = (3, 2)
        default: (cap, pathCap) = (4, 3)
        }
        XCTAssertEqual(mumu_gemm_isa_cap(), cap)
        for precision in [NN.AttentionPrecision.f32, .bf16] {
            let best = Self.paths.filter { $0.rawValue <= pathCap && $0.isAvailable(precision) }.last!
            XCTAssertEqual(NN.AttentionPath.defaultPath(precision), best, "\(precision)")
        }
        // f16 has one vector path, AVX-512 FP16, taken where the GEMM's cap allows avx512fp16; else the fallback.
        XCTAssertEqual(NN.AttentionPath.defaultPath(.f16),
                       cap >= 3 && NN.AttentionPath.avx512.isAvailable(.f16) ? .avx512 : .portable)
        XCTAssertEqual(NN.AttentionPath.avx512.isAvailable(.f16), BF16Matrix.ISA.avx512fp16.isAvailable)
        print("AttentionTests default paths: f32 \(NN.AttentionPath.defaultPath(.f32).name), bf16 \(NN.AttentionPath.defaultPath(.bf16).name), f16 \(NN.AttentionPath.defaultPath(.f16).name)")

        // Without a path, a bf16 request runs the f16 kernel where the GEMM takes its AVX-512 FP16 path (from 128
        // keys on; f32 below), the f32 one where the bf16 kernel does not pay (AVX2 alone), else the bf16 kernel of
        // the default path.
        var rng = Rng(state: 7)
        for tk in [90, 130] {
            let form = NN.sixteenBitFormat(keys: tk)
            XCTAssertEqual(form, BF16Matrix.defaultISA == .avx512fp16 ? (tk >= 128 ? .f16 : .f32)
                               : NN.AttentionPath.defaultPath(.bf16) != .avx2 ? .bf16 : .f32)
            let q = rng.tensor([1, 100, 128]), k = rng.tensor([1, tk, 128]), v = rng.tensor([1, tk, 128])
            let byDefault = NN.attention(q: q, k: k, v: v, heads: 2, precision: .bf16)
            let want = NN.attention(q: q, k: k, v: v, heads: 2, precision: form, path: NN.AttentionPath.defaultPath(form))
            XCTAssertEqual(byDefault.data, want.data, "bf16 over \(tk) keys by default runs \(form) on \(NN.AttentionPath.defaultPath(form).name)")
        }
    }

    /// No keys: every row is zero (nothing to attend to), not NaN.
    func testEmptyKeys() {
        var rng = Rng(state: 16)
        let q = rng.tensor([1, 5, 32]), k = Tensor(zeros: [1, 0, 32])
        let y = NN.attention(q: q, k: k, v: k, heads: 2)
        XCTAssertEqual(y.data, [Float](repeating: 0, count: 5 * 32))
    }
}
